"""Fault injection for testing clients of the label service: an ASGI middleware that answers
some ``images:annotate`` calls with a failure instead of passing them on.

app = FaultInjector(create_app(model, api_keys=["k"]), rate=0.3, seed=0)

Faults come in the wrapped app's schema (``app.state.wire``; Google's without one): a 429 is
Google's RESOURCE_EXHAUSTED, Rekognition's ThrottlingException, Clarifai's 11005, and so on.
Every fault is answered before the wrapped app runs, so a faulty call is never billed (a
``truncated`` answer too: its body is made up here, not cut from a real answer). That makes
"billed images == images the client paid for" an exact check of a retrying client.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import Sequence

from ..errors import UserInputError
from .errors import ApiError
from .gateway import ASGIApp, Receive, Scope, Send, send_rendered
from .wire import Wire
from .wire.gcv import GoogleVision

__all__ = ["ALL_FAULT_KINDS", "FAULT_KINDS", "FaultInjector"]

# The kinds drawn by default; "503" (a model loading, an API down) is there on request.
FAULT_KINDS = ("429", "500", "timeout", "truncated")
ALL_FAULT_KINDS = (*FAULT_KINDS, "503")

_MESSAGES = {
    "429": "Quota exceeded for quota metric 'Requests' (injected fault).",
    "500": "Internal error encountered.",
    "503": "The service is unavailable (injected fault).",
    "timeout": "Deadline exceeded.",
}


def _fault(kind: str) -> ApiError:
    """A fault as the schema-neutral error each wire renders in its own form."""
    if kind == "429":
        return ApiError(
            429,
            _MESSAGES[kind],
            reason="RATE_LIMIT_EXCEEDED",
            headers={"Retry-After": "0"},
            kind="rate",
        )
    if kind == "timeout":
        return ApiError(504, _MESSAGES[kind], kind="unavailable")
    return ApiError(int(kind), _MESSAGES[kind])


class FaultInjector:
    """ASGI middleware: each labelling call (or each POST to ``path``, if given) fails with
    probability ``rate``, with a kind drawn uniformly from ``kinds`` (both from
    ``random.Random(seed)``, under a lock), in the schema's own error form:

    * ``"429"``: the rate-limit error, ``Retry-After: 0`` where the API sends one (Google: 429
      RESOURCE_EXHAUSTED, reason RATE_LIMIT_EXCEEDED; Rekognition: ThrottlingException);
    * ``"500"``: the internal error;
    * ``"503"``: unavailable (Hugging Face: a model loading, with ``estimated_time``);
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
        path: str | None = None,
        wire: Wire | None = None,
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise UserInputError(f"rate must be in [0, 1], got {rate}")
        unknown = sorted(set(kinds) - set(ALL_FAULT_KINDS))
        if unknown or not kinds:
            raise UserInputError(
                f"kinds must be a non-empty subset of {ALL_FAULT_KINDS}, got {kinds}"
            )
        if not timeout_s >= 0:
            raise UserInputError(f"timeout_s must be >= 0, got {timeout_s}")
        self.app = app
        self.rate = rate
        self.kinds = tuple(kinds)
        self.timeout_s = timeout_s
        self.path = path
        state = getattr(app, "state", None)
        found = wire if wire is not None else getattr(state, "wire", None)
        self.wire: Wire = found if isinstance(found, Wire) else GoogleVision()
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
        method, path = str(scope.get("method", "")), str(scope.get("path", ""))
        if scope["type"] != "http" or not (
            method == "POST" and path == self.path
            if self.path is not None
            else self.wire.is_call(method, path)
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
        if kind == "timeout":
            await asyncio.sleep(self.timeout_s)
        if kind == "truncated":
            answer = self.wire.sample_answer()
            status, headers, body = 200, dict[str, str](), answer[: len(answer) // 2]
        else:
            status, headers, body = self.wire.render(_fault(kind))
        await send_rendered(send, status, headers, body, close=False)
