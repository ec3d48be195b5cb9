"""What a wire schema is to the service: where its calls go, how a caller is authenticated, how
its errors look, and its endpoint. The gateway, the fault injector and the labeller are shared.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.responses import Response

from ...targets.labels import LabelIndex
from ..core import Labeller
from ..errors import ApiError
from ..gateway import INFO_KEY

__all__ = [
    "Context",
    "Wire",
    "json_reply",
    "request_body",
    "request_key",
    "set_billed",
]

Scope = MutableMapping[str, Any]


@dataclass(frozen=True)
class Context:
    """What an endpoint needs besides the request: the labeller (billing, decoding, model),
    the label index, the lowest score a label is shown at, the images-per-call limit."""

    labeller: Labeller
    index: LabelIndex
    threshold: float
    max_images: int
    model_name: str


def json_reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A compact JSON response (the vendors send no pretty-printing either)."""
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(payload, status, headers=headers, media_type="application/json")


class Wire(ABC):
    """One API's format. A new instance per app: some hold the keys' secrets."""

    name: ClassVar[str]
    title: ClassVar[str]
    # The API's own limit on images in one call.
    max_images: ClassVar[int] = 1
    # Verified only once the body is in (SigV4 signs the payload): rate limit after it.
    verifies_body: ClassVar[bool] = False

    def key_ids(self, api_keys: list[str]) -> list[str]:
        """The identities the gateway bills and limits, from ``--api-key`` values."""
        return list(api_keys)

    @abstractmethod
    def guarded(self, path: str) -> bool:
        """Whether a path is behind the gateway (key, rate limit, body limits)."""

    @abstractmethod
    def is_call(self, method: str, path: str) -> bool:
        """Whether a request is a labelling call (where faults are injected)."""

    @abstractmethod
    def credential(self, scope: Scope, headers: dict[bytes, bytes]) -> bytes | None:
        """The key id the caller presents, or None if it presents none."""

    def verify(self, scope: Scope, headers: dict[bytes, bytes], body: bytes) -> ApiError | None:
        """A check that needs the body (a signature); the key id is already known."""
        return None

    def json_body(self, headers: dict[bytes, bytes]) -> bool:
        """Whether the body is JSON, to be bounded in values before it is parsed."""
        return True

    @abstractmethod
    def render(self, error: ApiError) -> tuple[int, dict[str, str], bytes]:
        """An error as this API answers it: status, headers, body."""

    @abstractmethod
    def sample_answer(self) -> bytes:
        """A successful answer's shape, for faults that cut one short."""

    @abstractmethod
    def install(self, app: FastAPI, ctx: Context) -> None:
        """Add the API's endpoint(s) to ``app``."""

    def error_response(self, error: ApiError) -> Response:
        status, headers, body = self.render(error)
        return Response(body, status, headers=headers, media_type="application/json")


def request_body(request: Request) -> bytes:
    """The body the gateway read (and bounded) for this request."""
    info = request.scope.get(INFO_KEY)
    return b"" if info is None else bytes(info.body)


def request_key(request: Request) -> str:
    """The authenticated key id of this request (the gateway checked it)."""
    info = request.scope.get(INFO_KEY)
    if info is None or info.key is None:  # only reachable if the gateway is bypassed
        raise ApiError(403, "The request is missing a valid API key.", kind="missing_key")
    return str(info.key)


def set_billed(request: Request, images: int) -> None:
    """Note the images billed for this request, for the access log."""
    info = request.scope.get(INFO_KEY)
    if info is not None:
        info.billed = images
