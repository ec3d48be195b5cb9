"""A Cloud-Vision-style label service (``POST /v1/images:annotate``) in front of a classifier.

It is an attack target: it answers like Google's API (labels with scores, Google's error
envelope and status codes), asks for an API key, bills every labelled image to its key, and
enforces a per-key quota, a per-key rate limit and a request size limit.

Status codes, following Google where its behaviour is documented or widely reported:

* no key: 403 PERMISSION_DENIED "The request is missing a valid API key.";
  a wrong key: 400 INVALID_ARGUMENT "API key not valid. ..." with reason API_KEY_INVALID
  (Google answers an invalid or expired key with 400, not 403);
* malformed JSON, unknown fields, wrong types, bad base64, empty or oversized batches: 400
  INVALID_ARGUMENT for the whole call, and nothing is billed (Google's JSON parser rejects
  the whole call too);
* bytes that are not an image, a missing image, no LABEL_DETECTION feature: that entry of
  ``responses`` carries ``{"error": {"code": 3, "message": ...}}`` and the other images are
  still labelled, as Google does ("Bad image data.");
* over the rate limit or the quota: 429 RESOURCE_EXHAUSTED with a Retry-After header and
  the reason RATE_LIMIT_EXCEEDED (retry later) or QUOTA_EXCEEDED (the key's images are spent);
* a body over ``max_body_bytes``: 413 (Google says 400 "Request payload size exceeds the
  limit"; 413 is the HTTP status for it and lets a client tell it apart from bad input).

Billing: one unit per image that a call asks LABEL_DETECTION for and that gets labelled.
Images whose bytes do not decode are not billed; a call refused as a whole bills nothing.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ImageLoadError, UserInputError
from ..models import Backend, Classifier
from .decode import decode_base64, decode_image
from .labels import DEFAULT_MAX_RESULTS, DEFAULT_THRESHOLD, LabelIndex, label_index
from .schema import (
    AnnotateImageResponse,
    BatchAnnotateImagesRequest,
    BatchAnnotateImagesResponse,
    EntityAnnotation,
    ErrorBody,
    HealthResponse,
    Status,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "MAX_IMAGES_PER_CALL",
    "ApiError",
    "KeyLedger",
    "create_app",
    "redact",
    "serve",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ANNOTATE_PATH = "/v1/images:annotate"
GUARDED_PREFIX = "/v1/"
# Cloud Vision's limits: 10 MiB of JSON per call, 16 images per synchronous call.
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_IMAGES_PER_CALL = 16
# A spent quota never refills while the server runs; a day is what Google's daily quotas say.
QUOTA_RETRY_AFTER_S = 86_400
SERVICE = "vision.googleapis.com"

access_log = logging.getLogger("bbattack.service.access")
log = logging.getLogger("bbattack.service")

# google.rpc.Code names of the HTTP statuses this service sends.
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_INFO_KEY = "bbattack.request"


class ApiError(Exception):
    """An error answered with Google's envelope ``{"error": {code, message, status}}``."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        headers: dict[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = list(details or [])
        if reason:
            self.details.insert(
                0,
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": reason,
                    "domain": "googleapis.com",
                    "metadata": {"service": SERVICE},
                },
            )

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "status": _STATUS.get(
                self.code, "UNKNOWN" if self.code >= 500 else "FAILED_PRECONDITION"
            ),
        }
        if self.details:
            err["details"] = self.details
        return {"error": err}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.code, headers=self.headers)


def redact(key: str | None) -> str:
    """A key as the access log shows it: at most its first 4 characters (half of a short one)."""
    if not key:
        return "-"
    return key[: min(4, len(key) // 2)] + "…"


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class KeyLedger:
    """Per-key billing, quota and token-bucket rate limit, safe to use from several threads.

    ``usage[key]`` is the number of images billed to ``key``. ``rate`` is calls per second per
    key, with bursts of up to ``burst`` calls (default: one second's worth, at least 1).
    """

    quota: int | None = None
    rate: float | None = None
    burst: float | None = None
    clock: Callable[[], float] = time.monotonic
    usage: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.quota is not None and self.quota < 0:
            raise UserInputError(f"quota must be >= 0, got {self.quota}")
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise UserInputError(f"rate must be a positive number of calls/s, got {self.rate}")
        if self.burst is None and self.rate is not None:
            self.burst = max(1.0, self.rate)
        if self.burst is not None and self.burst < 1:
            raise UserInputError(f"burst must be >= 1, got {self.burst}")

    def admit(self, key: str) -> float | None:
        """Count a call; None if the rate limit lets it through, else seconds until it would."""
        with self._lock:
            self.calls[key] = self.calls.get(key, 0) + 1
            if self.rate is None or self.burst is None:
                return None
            now = self.clock()
            b = self._buckets.setdefault(key, _Bucket(self.burst, now))
            b.tokens = min(self.burst, b.tokens + (now - b.stamp) * self.rate)
            b.stamp = now
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return None
            return (1.0 - b.tokens) / self.rate

    def reserve(self, key: str, n: int) -> bool:
        """Bill ``n`` images if the quota has room for all of them; otherwise bill nothing."""
        with self._lock:
            used = self.usage.get(key, 0)
            if self.quota is not None and used + n > self.quota:
                return False
            self.usage[key] = used + n
            return True

    def refund(self, key: str, n: int) -> None:
        """Take back images reserved but not labelled."""
        if n:
            with self._lock:
                self.usage[key] = self.usage.get(key, 0) - n


@dataclass
class _RequestInfo:
    """What the gateway learnt about a call, for the endpoint and the access log."""

    key: str | None = None
    billed: int = 0
    status: int = 500


class _Gateway:
    """Pure ASGI middleware in front of ``/v1/``: size limit, API key, rate limit; and one JSON
    access-log line for every HTTP request. It reads the body itself (bounded) and replays it,
    so an oversized body is refused without ever being held in full."""

    def __init__(
        self, app: ASGIApp, *, keys: list[bytes], ledger: KeyLedger, max_body_bytes: int
    ) -> None:
        self.app = app
        self.keys = keys
        self.ledger = ledger
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        info = _RequestInfo()
        scope[_INFO_KEY] = info

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                info.status = int(message["status"])
            await send(message)

        try:
            if str(scope.get("path", "")).startswith(GUARDED_PREFIX):
                await self._guarded(scope, receive, send_logged, info)
            else:
                await self.app(scope, receive, send_logged)
        finally:
            access_log.info(
                json.dumps(
                    {
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "status": info.status,
                        "key": redact(info.key),
                        "images": info.billed,
                        "latency_ms": round((time.perf_counter() - start) * 1000.0, 1),
                    },
                    ensure_ascii=False,
                )
            )

    async def _guarded(
        self, scope: Scope, receive: Receive, send: Send, info: _RequestInfo
    ) -> None:
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        length = headers.get(b"content-length")
        if length is not None:
            digits = length.strip()
            if not digits.isdigit():
                await _send_error(send, ApiError(400, "Invalid Content-Length header."))
                return
            # Length first: int() refuses numbers of more than 4300 digits.
            if len(digits) > 18 or int(digits) > self.max_body_bytes:
                if int(digits[:19]) <= 2 * self.max_body_bytes:
                    await _drain(receive, 2 * self.max_body_bytes)
                await _send_error(send, self._too_large())
                return
        error = self._authenticate(scope, headers, info)
        if error is None and info.key is not None:
            wait = self.ledger.admit(info.key)
            if wait is not None:
                error = ApiError(
                    429,
                    f"Quota exceeded for quota metric 'Requests' and limit 'Requests per second "
                    f"per API key' of service '{SERVICE}'. Retry in {wait:.2f}s.",
                    reason="RATE_LIMIT_EXCEEDED",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
        if error is not None:
            await _send_error(send, error)
            return
        body = await self._read_body(receive)
        if body is None:
            await _drain(receive, self.max_body_bytes)
            await _send_error(send, self._too_large())
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body, only a disconnect can come

        await self.app(scope, replay, send)

    def _too_large(self) -> ApiError:
        return ApiError(
            413, f"Request payload size exceeds the limit: {self.max_body_bytes} bytes."
        )

    def _authenticate(
        self, scope: Scope, headers: dict[bytes, bytes], info: _RequestInfo
    ) -> ApiError | None:
        """The key comes from ``X-Goog-Api-Key`` or, failing that, the ``key`` query parameter."""
        raw = headers.get(b"x-goog-api-key")
        if raw is None:
            # latin-1 both ways keeps the percent-decoded bytes exactly as sent.
            query = urllib.parse.parse_qs(
                bytes(scope.get("query_string", b"")).decode("latin-1"),
                keep_blank_values=True,
                encoding="latin-1",
            )
            values = query.get("key")
            raw = values[0].encode("latin-1") if values else None
        if not raw:
            return ApiError(
                403, "The request is missing a valid API key.", reason="API_KEY_MISSING"
            )
        info.key = raw.decode("utf-8", errors="replace")
        # Compare with every key, without stopping early: the time taken tells nothing.
        matched = False
        for k in self.keys:
            matched |= hmac.compare_digest(raw, k)
        if not matched:
            return ApiError(
                400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID"
            )
        return None

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit (chunked bodies included)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)  # client went away; the app will see an empty body
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop up to ``budget`` more bytes of a refused body. A client still sending
    when the server closes gets a reset instead of the answer; a slightly oversized body is
    worth reading to spare it that. Past the budget the connection is closed regardless."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _send_error(send: Send, error: ApiError) -> None:
    payload = json.dumps(error.body()).encode("utf-8")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        # A refused body may be left partly unread: the connection cannot be reused.
        (b"connection", b"close"),
    ] + [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.code, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _field_path(loc: tuple[Any, ...]) -> str:
    """("body", "requests", 0, "image") -> "requests[0].image"."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _validation_error(exc: RequestValidationError) -> ApiError:
    """Google-like wording for the first problem; every problem (up to 10) in the details."""
    violations: list[dict[str, str]] = []
    messages: list[str] = []
    for e in list(exc.errors())[:10]:
        loc = tuple(e.get("loc", ()))
        kind = str(e.get("type", ""))
        path = _field_path(loc)
        if kind == "json_invalid":
            reason = str(e.get("ctx", {}).get("error", "JSON decode error"))
            pos = loc[1] if len(loc) > 1 else "?"
            msg = f"Invalid JSON payload received. {reason} at position {pos}."
        elif kind == "extra_forbidden":
            parent, _, name = path.rpartition(".")
            where = f" at '{parent}'" if parent else ""
            msg = f'Invalid JSON payload received. Unknown name "{name}"{where}: Cannot find field.'
        elif kind == "missing":
            msg = f"Invalid JSON payload received. Missing required field '{path or 'body'}'."
        elif not path:
            msg = (
                "Invalid JSON payload received. Send a JSON object with "
                "Content-Type: application/json."
            )
        else:
            msg = f"Invalid value at '{path}': {e.get('msg', 'invalid')}"
        messages.append(msg)
        violations.append({"field": path, "description": msg})
    details = [
        {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": violations}
    ]
    more = len(exc.errors()) - 1
    first = messages[0] if messages else "Invalid request."
    return ApiError(400, first + (f" (and {more} more)" if more > 0 else ""), details=details)


@dataclass
class _Plan:
    """One entry of a call that is to be labelled."""

    index: int
    data: bytes
    max_results: int


class _Annotator:
    """The endpoint's work: check the batch, bill it, decode, one forward pass, labels."""

    def __init__(
        self,
        model: Classifier,
        index: LabelIndex,
        ledger: KeyLedger,
        *,
        threshold: float,
        max_images: int,
    ) -> None:
        self.model = model
        self.index = index
        self.ledger = ledger
        self.threshold = threshold
        self.max_images = max_images
        self.size = model.input_shape[1]
        # Decoding is CPU-bound and a large image takes hundreds of MB while it is converted:
        # a few at a time bound both, whatever the threadpool's size.
        self._decode_slots = threading.BoundedSemaphore(min(4, os.cpu_count() or 1))
        # One forward pass at a time: it uses every core anyway, and a Classifier does not
        # promise to be thread-safe.
        self._model_lock = threading.Lock()

    def annotate(
        self, body: BatchAnnotateImagesRequest, key: str
    ) -> tuple[BatchAnnotateImagesResponse, int]:
        """The response and the number of images billed."""
        n = len(body.requests)
        if n == 0:
            raise ApiError(400, "No requests specified: 'requests' must hold at least one image.")
        if n > self.max_images:
            raise ApiError(400, f"Too many images in one call: {n} (at most {self.max_images}).")
        responses: list[AnnotateImageResponse] = [AnnotateImageResponse() for _ in range(n)]
        plans: list[_Plan] = []
        # Every field is checked before anything is billed: bad base64 fails the whole call.
        for i, req in enumerate(body.requests):
            content = req.image.content if req.image is not None else None
            data = None
            if content is not None:
                try:
                    data = decode_base64(content)
                except ValueError:
                    raise ApiError(
                        400,
                        f"Invalid value at 'requests[{i}].image.content' (TYPE_BYTES), "
                        "Base64 decoding failed.",
                    ) from None
            labels = [f for f in req.features if f.type == "LABEL_DETECTION"]
            if not req.features:
                responses[i].error = Status(code=3, message="No feature specified.")
            elif not labels:
                kinds = ", ".join(sorted({f.type for f in req.features}))
                responses[i].error = Status(
                    code=12, message=f"Not supported here: {kinds}; only LABEL_DETECTION is."
                )
            elif data is None:
                has_source = req.image is not None and req.image.source is not None
                responses[i].error = Status(
                    code=3,
                    message="image.source is not supported here: send the bytes in image.content."
                    if has_source
                    else "No image provided.",
                )
            else:
                limit = max(f.max_results or DEFAULT_MAX_RESULTS for f in labels)
                plans.append(_Plan(i, data, limit))
        if plans and not self.ledger.reserve(key, len(plans)):
            raise ApiError(
                429,
                f"Quota exceeded for quota metric 'Images' and limit 'Images per API key' of "
                f"service '{SERVICE}': {len(plans)} more would pass {self.ledger.quota}.",
                reason="QUOTA_EXCEEDED",
                headers={"Retry-After": str(QUOTA_RETRY_AFTER_S)},
            )
        good: list[_Plan] = []
        images: list[Any] = []
        for p in plans:
            try:
                with self._decode_slots:
                    images.append(decode_image(p.data, self.size))
                good.append(p)
            except ImageLoadError:
                responses[p.index].error = Status(code=3, message="Bad image data.")
        self.ledger.refund(key, len(plans) - len(good))
        if good:
            try:
                with self._model_lock:
                    probs = self.model(np.stack(images))
            except BaseException:
                self.ledger.refund(key, len(good))
                raise
            found = self.index.annotate(
                probs, threshold=self.threshold, max_results=[p.max_results for p in good]
            )
            for p, labs in zip(good, found, strict=True):
                if labs:  # proto3 JSON leaves an empty list out, as Google does
                    responses[p.index].label_annotations = [
                        EntityAnnotation(
                            mid=a.mid,
                            description=a.description,
                            score=a.score,
                            topicality=a.topicality,
                        )
                        for a in labs
                    ]
        return BatchAnnotateImagesResponse(responses=responses), len(good)


def create_app(
    model: Classifier,
    *,
    api_keys: list[str],
    quota: int | None = None,
    rate: float | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    threshold: float = DEFAULT_THRESHOLD,
    burst: float | None = None,
    max_images_per_call: int = MAX_IMAGES_PER_CALL,
) -> FastAPI:
    """The label service as a FastAPI app.

    ``model`` must take (N, 3, S, S) images and name its classes (ImageNet wnids give the
    coarse labels). ``quota`` caps the images billed to each key over the app's life; ``rate``
    caps each key's calls per second (token bucket, bursts of ``burst`` calls). Usage is on
    ``app.state.usage`` (key -> images billed) and ``app.state.ledger``.
    """
    keys = [k for k in api_keys if k]
    if not keys or len(keys) != len(api_keys):
        raise UserInputError("api_keys must hold at least one key, and no empty key")
    if max_body_bytes < 1:
        raise UserInputError(f"max_body_bytes must be >= 1, got {max_body_bytes}")
    if not 0.0 <= threshold <= 1.0:
        raise UserInputError(f"threshold must be in [0, 1], got {threshold}")
    if max_images_per_call < 1:
        raise UserInputError(f"max_images_per_call must be >= 1, got {max_images_per_call}")
    c, h, w = model.input_shape
    if c != 3 or h != w:
        raise UserInputError(
            f"the service needs a model of square RGB input, got {model.input_shape}"
        )
    ledger = KeyLedger(quota=quota, rate=rate, burst=burst)
    annotator = _Annotator(
        model,
        label_index(model.class_names),
        ledger,
        threshold=threshold,
        max_images=max_images_per_call,
    )

    app = FastAPI(
        title="bbattack label service",
        version="1",
        description=(
            "A Cloud-Vision-style LABEL_DETECTION endpoint serving an ImageNet classifier, "
            "as a black-box attack target. Pass the API key as `?key=` or `X-Goog-Api-Key`."
        ),
    )
    app.state.ledger = ledger
    app.state.usage = ledger.usage
    app.state.model_name = model.name

    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorBody, "description": text}
        for code, text in (
            (400, "Malformed request, or an invalid API key"),
            (403, "No API key"),
            (413, "Body over the size limit"),
            (429, "Rate limit or quota exceeded; see Retry-After"),
        )
    }

    @app.post(
        ANNOTATE_PATH,
        response_model=BatchAnnotateImagesResponse,
        response_model_exclude_none=True,
        responses=errors,
        summary="Label images (Cloud Vision images:annotate, LABEL_DETECTION only)",
    )
    def annotate(body: BatchAnnotateImagesRequest, request: Request) -> Any:
        # A sync endpoint: FastAPI runs it in its threadpool, so decoding and the model call
        # never block the event loop.
        info: _RequestInfo | None = request.scope.get(_INFO_KEY)
        if info is None or info.key is None:  # only reachable if the gateway is bypassed
            raise ApiError(403, "The request is missing a valid API key.")
        response, billed = annotator.annotate(body, info.key)
        info.billed = billed
        return response

    @app.get("/healthz", response_model=HealthResponse, summary="Liveness and the model served")
    def healthz() -> HealthResponse:
        return HealthResponse(status="ok", model=model.name)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        message = str(exc.detail)
        if exc.status_code == 400:  # FastAPI's only 400: a body it could not parse at all
            message = f"Invalid JSON payload received. {message}."
        return ApiError(exc.status_code, message, headers=headers).response()

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return ApiError(500, "Internal error encountered.").response()

    app.add_middleware(
        _Gateway,
        keys=[k.encode("utf-8") for k in keys],
        ledger=ledger,
        max_body_bytes=max_body_bytes,
    )
    return app


def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    model: Classifier | None = None,
    backend: Backend = "auto",
    api_keys: list[str] | None = None,
    quota: int | None = None,
    rate: float | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    threshold: float = DEFAULT_THRESHOLD,
    log_level: str = "info",
) -> None:
    """Run the service with uvicorn until interrupted (the built-in ImageNet model by default).

    API keys come from ``api_keys`` or else ``$BBATTACK_API_KEYS`` (comma-separated).
    """
    import uvicorn

    from ..models import load_model

    keys = api_keys or [
        k.strip() for k in os.environ.get("BBATTACK_API_KEYS", "").split(",") if k.strip()
    ]
    if not keys:
        raise UserInputError("no API keys: pass api_keys or set BBATTACK_API_KEYS")
    clf = model if model is not None else load_model(backend=backend)
    app = create_app(
        clf,
        api_keys=keys,
        quota=quota,
        rate=rate,
        max_body_bytes=max_body_bytes,
        threshold=threshold,
    )
    if not access_log.handlers:  # uvicorn configures its own loggers only
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False
    # uvicorn's own access log would print the query string, API key included.
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
