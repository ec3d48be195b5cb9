"""Fault injection for testing clients of the label service: an ASGI middleware that answers
some ``images:annotate`` calls with a failure instead of passing them on.

app = FaultInjector(create_app(model, api_keys=["k"]), rate=0.3, seed=0)

Every fault is answered before the wrapped app runs, so a faulty call is never billed (a
``truncated`` answer too: its body is made up here, not cut from a real answer). That makes
"billed images == images the client paid for" an exact check of a retrying client.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections import Counter
from collections.abc import Sequence

from ..errors import UserInputError
from .app import ANNOTATE_PATH
from .gateway import ASGIApp, Receive, Scope, Send

__all__ = ["FAULT_KINDS", "FaultInjector"]

FAULT_KINDS = ("429", "500", "timeout", "truncated")

# What a truncated answer is cut from: shaped like a real one, so a client that does not
# check for a complete body would happily read the first half.
_FAKE_ANSWER = json.dumps(
    {
        "responses": [
            {
                "labelAnnotations": [
                    {
                        "mid": "/wn/n02099601",
                        "description": "Golden retriever",
                        "score": 0.93,
                        "topicality": 0.93,
                    },
                    {"mid": "/wn/n02084071", "description": "Dog", "score": 0.9, "topicality": 0.9},
                ]
            },
            {
                "labelAnnotations": [
                    {
                        "mid": "/wn/n07920052",
                        "description": "Espresso",
                        "score": 0.8,
                        "topicality": 0.8,
                    },
                ]
            },
        ]
    }
).encode("utf-8")


def _error(code: int, status: str, message: str, reason: str | None = None) -> bytes:
    err: dict[str, object] = {"code": code, "message": message, "status": status}
    if reason is not None:
        err["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": "vision.googleapis.com"},
            }
        ]
    return json.dumps({"error": err}).encode("utf-8")


class FaultInjector:
    """ASGI middleware: each POST to ``path`` fails with probability ``rate``, with a kind
    drawn uniformly from ``kinds`` (both from ``random.Random(seed)``, under a lock):

    * ``"429"``: 429 RESOURCE_EXHAUSTED, reason RATE_LIMIT_EXCEEDED, ``Retry-After: 0``;
    * ``"500"``: 500 INTERNAL;
    * ``"timeout"``: waits ``timeout_s`` (set it above the client's timeout), then 504;
    * ``"truncated"``: 200 with the first half of a JSON answer.

    Other requests pass through. ``injected`` counts the faults by kind, ``passed`` the calls
    let through. The sequence of decisions depends only on ``seed``: which call gets which
    depends on arrival order.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        rate: float,
        seed: int,
        kinds: Sequence[str] = FAULT_KINDS,
        timeout_s: float = 1.0,
        path: str = ANNOTATE_PATH,
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise UserInputError(f"rate must be in [0, 1], got {rate}")
        unknown = sorted(set(kinds) - set(FAULT_KINDS))
        if unknown or not kinds:
            raise UserInputError(f"kinds must be a non-empty subset of {FAULT_KINDS}, got {kinds}")
        if not timeout_s >= 0:
            raise UserInputError(f"timeout_s must be >= 0, got {timeout_s}")
        self.app = app
        self.rate = rate
        self.kinds = tuple(kinds)
        self.timeout_s = timeout_s
        self.path = path
        self.injected: Counter[str] = Counter()
        self.passed = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def _draw(self) -> str | None:
        with self._lock:
            if self._rng.random() >= self.rate:
                self.passed += 1
                return None
            kind = self._rng.choice(self.kinds)
            self.injected[kind] += 1
            return kind

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or scope.get("path") != self.path
        ):
            await self.app(scope, receive, send)
            return
        kind = self._draw()
        if kind is None:
            await self.app(scope, receive, send)
            return
        # Read the body first, so the connection stays usable for the client's next call.
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        headers: list[tuple[bytes, bytes]] = []
        if kind == "429":
            status = 429
            body = _error(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Requests' (injected fault).",
                reason="RATE_LIMIT_EXCEEDED",
            )
            headers.append((b"retry-after", b"0"))
        elif kind == "500":
            status, body = 500, _error(500, "INTERNAL", "Internal error encountered.")
        elif kind == "timeout":
            await asyncio.sleep(self.timeout_s)
            status, body = 504, _error(504, "DEADLINE_EXCEEDED", "Deadline exceeded.")
        else:
            status, body = 200, _FAKE_ANSWER[: len(_FAKE_ANSWER) // 2]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json; charset=UTF-8"),
                    (b"content-length", str(len(body)).encode("ascii")),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})
