"""One wire schema per label API (see :mod:`bbattack.remote.wire`), by name."""

from __future__ import annotations

import inspect
from typing import Any

from ...errors import UserInputError
from ..wire import WireSchema
from .azure import AzureVision
from .clarifai import Clarifai
from .gcv import GoogleVision
from .hf import HuggingFace
from .json import GenericJson
from .rekognition import Rekognition

__all__ = ["SCHEMAS", "make_schema", "schema_class"]

SCHEMAS: dict[str, type[WireSchema]] = {
    s.name: s for s in (GoogleVision, Rekognition, AzureVision, Clarifai, HuggingFace, GenericJson)
}


def schema_class(name: str) -> type[WireSchema]:
    """The schema called ``name``; UserInputError naming the known ones otherwise."""
    try:
        return SCHEMAS[name]
    except KeyError:
        raise UserInputError(
            f"unknown schema {name!r}; choose one of: {', '.join(SCHEMAS)}"
        ) from None


def make_schema(
    name: str, endpoint: str, api_key: str, max_results: int, options: dict[str, Any] | None
) -> WireSchema:
    """The schema ``name`` for ``endpoint``; ``options`` go to its constructor (the JSON
    schema's paths, template, auth and scale; Rekognition's ``min_confidence``)."""
    cls = schema_class(name)
    opts = {k: v for k, v in (options or {}).items() if v is not None}
    takes = set(inspect.signature(cls.__init__).parameters) - {"self", "endpoint", "api_key"}
    wrong = sorted(set(opts) - (takes - {"max_results"}))
    if wrong:
        raise UserInputError(f"--schema {name} does not take {', '.join(wrong)}")
    return cls(endpoint, api_key, max_results, **opts)
