"""Where the endpoint and key come from (arguments or the environment), and the names of
Google's wire format kept where they always were (the format itself is
:mod:`.schemas.gcv`)."""

from __future__ import annotations

import os

from ..errors import UserInputError
from .schemas.gcv import (
    ANNOTATE_PATH,
    GOOGLE_VISION_ENDPOINT,
    MAX_IMAGES_PER_CALL,
    error_of,
    labels_of,
    request_body,
)
from .wire import MAX_QUOTED

__all__ = [
    "ANNOTATE_PATH",
    "API_KEY_ENV",
    "ENDPOINT_ENV",
    "GOOGLE_VISION_ENDPOINT",
    "MAX_IMAGES_PER_CALL",
    "MAX_QUOTED",
    "Labels",
    "error_of",
    "labels_of",
    "raw_endpoint",
    "raw_key",
    "request_body",
]

Labels = list[tuple[str, float]]

ENDPOINT_ENV = "BBATTACK_ENDPOINT"
API_KEY_ENV = "BBATTACK_API_KEY"


def raw_endpoint(endpoint: str | None) -> str:
    """``endpoint`` or ``$BBATTACK_ENDPOINT``; UserInputError where neither is given."""
    raw = (endpoint if endpoint is not None else os.environ.get(ENDPOINT_ENV, "")).strip()
    if not raw:
        raise UserInputError(
            f"no endpoint: pass endpoint or set {ENDPOINT_ENV} "
            f"(Google's is {GOOGLE_VISION_ENDPOINT})"
        )
    return raw


def raw_key(api_key: str | None) -> str:
    """``api_key`` or ``$BBATTACK_API_KEY``, printable ASCII; UserInputError otherwise."""
    key = (api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")).strip()
    if not key:
        raise UserInputError(f"no API key: pass api_key or set {API_KEY_ENV}")
    if not key.isascii() or not key.isprintable():
        raise UserInputError("the API key must be printable ASCII")
    return key
