"""Google Cloud Vision ``POST /v1/images:annotate``, LABEL_DETECTION (the default schema).

Key as ``X-Goog-Api-Key`` or ``?key=``; up to 16 images a call; labels with Google's fields
(``mid``, ``description``, ``score``, ``topicality``), scores 0-1, specific and coarse labels
side by side; errors in Google's envelope ``{"error": {"code", "message", "status",
"details"}}``. The request is parsed as proto3 JSON (see :mod:`bbattack.service.schema`), so
Google's own client (``google-cloud-vision``, REST transport, integer enums) is understood.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from fastapi import FastAPI, Request

from ..annotate import Annotator
from ..errors import ApiError
from ..gateway import INFO_KEY, RequestInfo, query_param
from ..schema import BatchAnnotateImagesRequest, BatchAnnotateImagesResponse, ErrorBody
from .base import Context, Scope, Wire

__all__ = ["ANNOTATE_PATH", "GoogleVision"]

ANNOTATE_PATH = "/v1/images:annotate"

# What a truncated answer is cut from: shaped like a real one, so a client that does not
# check for a complete body would happily read the first half.
_SAMPLE = {
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
                {"mid": "/wn/n07920052", "description": "Espresso", "score": 0.8, "topicality": 0.8}
            ]
        },
    ]
}


class GoogleVision(Wire):
    """Cloud Vision's ``images:annotate``."""

    name: ClassVar[str] = "gcv"
    title: ClassVar[str] = "Google Cloud Vision (images:annotate, LABEL_DETECTION)"
    max_images: ClassVar[int] = 16

    def guarded(self, path: str) -> bool:
        return path.startswith("/v1/")

    def is_call(self, method: str, path: str) -> bool:
        return method == "POST" and path == ANNOTATE_PATH

    def credential(self, scope: Scope, headers: dict[bytes, bytes]) -> bytes | None:
        raw = headers.get(b"x-goog-api-key")
        return raw if raw is not None else query_param(scope, "key")

    def render(self, error: ApiError) -> tuple[int, dict[str, str], bytes]:
        return error.code, dict(error.headers), json.dumps(error.body()).encode("utf-8")

    def sample_answer(self) -> bytes:
        return json.dumps(_SAMPLE).encode("utf-8")

    def install(self, app: FastAPI, ctx: Context) -> None:
        annotator = Annotator(
            ctx.labeller, ctx.index, threshold=ctx.threshold, max_images=ctx.max_images
        )
        errors: dict[int | str, dict[str, Any]] = {
            code: {"model": ErrorBody, "description": text}
            for code, text in (
                (400, "Malformed request, an invalid API key, or a call a defence rejected"),
                (403, "No API key, or a key a defence banned"),
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
            # A sync endpoint: FastAPI runs it in its threadpool, so decoding and the model
            # call never block the event loop.
            info: RequestInfo | None = request.scope.get(INFO_KEY)
            if info is None or info.key is None:  # only reachable if the gateway is bypassed
                raise ApiError(403, "The request is missing a valid API key.")
            response, billed = annotator.annotate(body, info.key)
            info.billed = billed
            return response
