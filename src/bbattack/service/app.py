"""A label service in front of a classifier, in the wire format of a cloud label API.

It is an attack target: it answers like the API it imitates (``schema``: Google Cloud Vision by
default, or AWS Rekognition, Azure AI Vision, Clarifai, Hugging Face; see
:mod:`bbattack.service.wire`), asks for that API's credentials, bills every labelled image to
its key, and enforces a per-key quota, a per-key rate limit and a request size limit, answering
each in the API's own error form.

Under ``gcv``, status codes follow Google where its behaviour is documented or widely reported:

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
  limit"; 413 is the HTTP status for it and lets a client tell it apart from bad input);
* a body of more JSON values than ``max_images_per_call`` images can need: 400, refused from
  a count of its bytes before anything is parsed (a 10 MB list of ``{}`` costs milliseconds);
* a body not received within ``body_timeout_s``: 408;
* a call a defence refuses (``defenses``; ``bbattack serve --defense``): 400
  FAILED_PRECONDITION with the ErrorInfo reason QUERY_REJECTED; a banned key: 403
  PERMISSION_DENIED with the reason KEY_BANNED. Never 429, which clients retry: a refusal
  must not be retried. The other schemas answer them in their own form (each wire's table):
  Rekognition ``QueryRejectedException`` / ``KeyBannedException`` (400), Azure 400
  ``InvalidRequest`` / 403 ``Forbidden`` with the inner code ``QueryRejected`` /
  ``KeyBanned``, Clarifai status 11200 / 11201 (HTTP 400 / 403), Hugging Face 400 / 403 with
  ``error_type`` ``query_rejected`` / ``key_banned``.

Billing (every schema): one unit per image that gets labelled. Images whose bytes do not
decode are not billed; a call refused as a whole bills nothing, but for a defence's refusal:
the caller paid for the query, and the defence saw it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._backend import Backend
from .._classifier import Classifier
from ..errors import UserInputError
from ..oracle import Middleware
from ..targets.labels import DEFAULT_THRESHOLD, label_index
from .core import Labeller
from .errors import ApiError, validation_error
from .gateway import (
    BODY_TIMEOUT_S,
    JSON_VALUES_PER_IMAGE,
    Gateway,
    KeyLedger,
    access_log,
)
from .schema import HealthResponse
from .wire import Context, Wire, make_wire
from .wire.base import set_billed
from .wire.gcv import ANNOTATE_PATH

__all__ = [
    "ANNOTATE_PATH",
    "DEFAULT_MAX_BODY_BYTES",
    "MAX_IMAGES_PER_CALL",
    "create_app",
    "serve",
]

# Cloud Vision's limits: 10 MiB of JSON per call, 16 images per synchronous call.
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_IMAGES_PER_CALL = 16

log = logging.getLogger("bbattack.service")


def create_app(
    model: Classifier,
    *,
    api_keys: list[str],
    quota: int | None = None,
    rate: float | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    threshold: float = DEFAULT_THRESHOLD,
    burst: float | None = None,
    max_images_per_call: int | None = None,
    body_timeout_s: float = BODY_TIMEOUT_S,
    schema: str = "gcv",
    defenses: Sequence[Middleware] = (),
) -> FastAPI:
    """The label service as a FastAPI app.

    ``model`` must take (N, 3, S, S) images and name its classes (ImageNet wnids give the
    coarse labels). ``schema`` is the wire format (``gcv``, ``rekognition``, ``azure``,
    ``clarifai``, ``hf``); under ``rekognition`` each key is ``AKID:SECRET`` and bills to its
    AKID. ``quota`` caps the images billed to each key over the app's life; ``rate`` caps each
    key's calls per second (token bucket, bursts of ``burst`` calls); ``max_images_per_call``
    defaults to the API's own limit. Usage is on ``app.state.usage`` (key -> images billed)
    and ``app.state.ledger``; ``app.state.labeller.classify`` is the forward pass of every
    schema. ``defenses`` (:mod:`bbattack.defenses`, outermost first) stand in front of the
    model for every key (``app.state.defenses``: their counters); a refused call is billed
    and answered with the schema's 4xx.
    """
    wire = make_wire(schema)
    if not api_keys or not all(api_keys):
        raise UserInputError("api_keys must hold at least one key, and no empty key")
    keys = wire.key_ids(api_keys)
    if max_images_per_call is None:
        max_images_per_call = wire.max_images
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
    labeller = Labeller(model, ledger, defenses)
    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from the package, not a CDN.
    app = FastAPIOffline(
        title="bbattack label service",
        version="1",
        description=f"{wire.title}, serving an ImageNet classifier as a black-box attack target.",
    )
    app.state.ledger = ledger
    app.state.usage = ledger.usage
    app.state.model_name = model.name
    app.state.wire = wire
    app.state.labeller = labeller
    app.state.defenses = list(defenses)
    ctx = Context(
        labeller=labeller,
        index=label_index(model.class_names),
        threshold=threshold,
        max_images=max_images_per_call,
        model_name=model.name,
    )
    wire.install(app, ctx)
    _add_common_routes(app, model.name, wire)
    app.add_middleware(
        Gateway,
        keys=[k.encode("utf-8") for k in keys],
        ledger=ledger,
        wire=wire,
        max_body_bytes=max_body_bytes,
        max_json_values=JSON_VALUES_PER_IMAGE * max_images_per_call,
        body_timeout_s=body_timeout_s,
    )
    return app


def _add_common_routes(app: FastAPI, model_name: str, wire: Wire) -> None:
    """``/healthz`` and the error handlers, each error in the schema's own form."""

    # async: it runs on the event loop, so it answers even while every worker thread is busy.
    @app.get("/healthz", response_model=HealthResponse, summary="Liveness and the model served")
    async def healthz() -> HealthResponse:
        return HealthResponse(status="ok", model=model_name)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        if exc.billed:  # a refused call that was billed all the same: the access log says so
            set_billed(request, exc.billed)
        return wire.error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return wire.error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})
        message = str(exc.detail)
        if exc.status_code == 400:  # FastAPI's only 400: a body it could not parse at all
            message = f"Invalid JSON payload received. {message}."
        return wire.error_response(ApiError(exc.status_code, message, headers=headers))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return wire.error_response(ApiError(500, "Internal error encountered."))


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
    schema: str = "gcv",
    model_spec: str | None = None,
    defenses: Sequence[str] = (),
) -> None:
    """Run the service with uvicorn until interrupted (the built-in ImageNet model by default,
    else ``model`` or the model spec ``model_spec``: :mod:`bbattack.targets.spec`).

    API keys come from ``api_keys`` or else ``$BBATTACK_API_KEYS`` (comma-separated).
    ``defenses``: defence specs (``blacklight:action=reject``; :mod:`bbattack.defenses`), in
    front of the model, outermost first.
    """
    import uvicorn

    from ..defenses import build, parse_specs
    from ..models import load_model
    from .server import bind, server_config

    keys = api_keys or [
        k.strip() for k in os.environ.get("BBATTACK_API_KEYS", "").split(",") if k.strip()
    ]
    if not keys:
        raise UserInputError("no API keys: pass api_keys or set BBATTACK_API_KEYS")
    make_wire(schema).key_ids(keys)  # a bad schema or key form is one line, before the model
    layers = [build(c) for c in parse_specs(defenses)]  # a bad defence too
    sock = bind(host, port)  # before the model loads: a port in use is one line, at once
    try:
        if model is not None:
            clf = model
        elif model_spec is not None:
            clf = load_model(model_spec, backend=backend)
        else:
            clf = load_model(backend=backend)
        app = create_app(
            clf,
            api_keys=keys,
            quota=quota,
            rate=rate,
            max_body_bytes=max_body_bytes,
            threshold=threshold,
            schema=schema,
            defenses=layers,
        )
    except BaseException:
        sock.close()
        raise
    if not access_log.handlers:  # uvicorn configures its own loggers only
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False
    try:
        uvicorn.Server(server_config(app, log_level=log_level)).run(sockets=[sock])
    finally:
        sock.close()
