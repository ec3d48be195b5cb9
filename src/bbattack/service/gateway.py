"""The gateway in front of a wire schema's endpoints: API keys, the per-key quota and rate
ledger, the body size limit, and the access log. Where a key comes from and how an error looks
are the schema's (:class:`~.wire.base.Wire`)."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import UserInputError
from .errors import SERVICE, ApiError, redact

if TYPE_CHECKING:
    from .wire.base import Wire

__all__ = [
    "BODY_TIMEOUT_S",
    "INFO_KEY",
    "JSON_VALUES_PER_IMAGE",
    "ASGIApp",
    "Gateway",
    "KeyLedger",
    "Message",
    "Receive",
    "RequestInfo",
    "Scope",
    "Send",
    "access_log",
    "json_values_bound",
    "query_param",
    "send_rendered",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Where the gateway leaves its RequestInfo in the ASGI scope, for the endpoint.
INFO_KEY = "bbattack.request"

access_log = logging.getLogger("bbattack.service.access")

# A whole body must arrive within this many seconds of its headers (408 otherwise).
BODY_TIMEOUT_S = 60.0
# JSON values one image's request may take (its objects, fields, features, context): a real
# one needs about ten. The bound is on the whole call: this many per image allowed in it.
JSON_VALUES_PER_IMAGE = 256


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
class RequestInfo:
    """What the gateway learnt about a call, for the endpoint and the access log."""

    key: str | None = None
    billed: int = 0
    status: int = 500
    body: bytes = b""


class Gateway:
    """Pure ASGI middleware in front of a schema's endpoints: size limit, API key (and, where
    the schema signs requests, the signature), rate limit; and one JSON
    access-log line for every HTTP request. It reads the body itself (bounded) and replays it,
    so an oversized body is refused without ever being held in full."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: list[bytes],
        ledger: KeyLedger,
        wire: Wire,
        max_body_bytes: int,
        max_json_values: int = 16 * JSON_VALUES_PER_IMAGE,
        body_timeout_s: float = BODY_TIMEOUT_S,
    ) -> None:
        self.app = app
        self.keys = keys
        self.ledger = ledger
        self.wire = wire
        self.max_body_bytes = max_body_bytes
        self.max_json_values = max_json_values
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        info = RequestInfo()
        scope[INFO_KEY] = info

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                info.status = int(message["status"])
            await send(message)

        try:
            if self.wire.guarded(str(scope.get("path", ""))):
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

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, info: RequestInfo) -> None:
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        length = headers.get(b"content-length")
        if length is not None:
            digits = length.strip()
            if not digits.isdigit():
                await self._send_error(send, ApiError(400, "Invalid Content-Length header."))
                return
            # Length first: int() refuses numbers of more than 4300 digits.
            if len(digits) > 18 or int(digits) > self.max_body_bytes:
                if int(digits[:19]) <= 2 * self.max_body_bytes:
                    await _drain(receive, 2 * self.max_body_bytes)
                await self._send_error(send, self._too_large())
                return
        error = self._authenticate(scope, headers, info)
        if error is None and not self.wire.verifies_body:
            error = self._admit(info)
        if error is not None:
            await self._send_error(send, error)
            return
        try:
            async with asyncio.timeout(self.body_timeout_s):
                body = await self._read_body(receive)
        except TimeoutError:
            await self._send_error(
                send, ApiError(408, f"Request body not received within {self.body_timeout_s:g}s.")
            )
            return
        if body is None:
            await _drain(receive, self.max_body_bytes)
            await self._send_error(send, self._too_large())
            return
        if self.wire.verifies_body:
            error = self.wire.verify(scope, headers, body) or self._admit(info)
            if error is not None:
                await self._send_error(send, error)
                return
        info.body = body
        values = json_values_bound(body) if self.wire.json_body(headers) else 0
        if values > self.max_json_values:
            # Refused from a byte count, before a parser builds millions of objects.
            await self._send_error(
                send,
                ApiError(
                    400,
                    f"Invalid JSON payload received. Too many values: up to {values:,} "
                    f"(at most {self.max_json_values:,} in one call).",
                ),
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body, only a disconnect can come

        await self.app(scope, replay, send)

    def _admit(self, info: RequestInfo) -> ApiError | None:
        """The rate limit: None if the key's bucket lets the call through."""
        if info.key is None:
            return None
        wait = self.ledger.admit(info.key)
        if wait is None:
            return None
        return ApiError(
            429,
            f"Quota exceeded for quota metric 'Requests' and limit 'Requests per second "
            f"per API key' of service '{SERVICE}'. Retry in {wait:.2f}s.",
            reason="RATE_LIMIT_EXCEEDED",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
            kind="rate",
        )

    async def _send_error(self, send: Send, error: ApiError) -> None:
        await send_rendered(send, *self.wire.render(error))

    def _too_large(self) -> ApiError:
        return ApiError(
            413, f"Request payload size exceeds the limit: {self.max_body_bytes} bytes."
        )

    def _authenticate(
        self, scope: Scope, headers: dict[bytes, bytes], info: RequestInfo
    ) -> ApiError | None:
        """The key (id) is where the schema says: for Google ``X-Goog-Api-Key`` or ``?key=``."""
        raw = self.wire.credential(scope, headers)
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
                400,
                "API key not valid. Please pass a valid API key.",
                reason="API_KEY_INVALID",
                kind="bad_key",
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


def json_values_bound(body: bytes) -> int:
    """An upper bound on the number of values in a JSON document, from three byte counts (C
    speed, no parsing): a container of m values holds m - 1 commas, so a document has at most
    commas + containers + 1 values. Commas and brackets inside strings only raise the bound;
    base64 image data holds none."""
    return body.count(b",") + body.count(b"{") + body.count(b"[") + 1


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


def query_param(scope: Scope, name: str) -> bytes | None:
    """The first value of a query parameter, percent-decoded, as bytes."""
    # latin-1 both ways keeps the percent-decoded bytes exactly as sent.
    query = urllib.parse.parse_qs(
        bytes(scope.get("query_string", b"")).decode("latin-1"),
        keep_blank_values=True,
        encoding="latin-1",
    )
    values = query.get(name)
    return values[0].encode("latin-1") if values else None


async def send_rendered(
    send: Send, status: int, headers: dict[str, str], payload: bytes, *, close: bool = True
) -> None:
    """Send a whole JSON answer from ASGI middleware."""
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ] + [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    if close:
        # A refused body may be left partly unread: the connection cannot be reused.
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})
