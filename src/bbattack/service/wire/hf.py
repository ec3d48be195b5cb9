"""Hugging Face inference, the ``image-classification`` task.

``POST /models/{model_id}`` (or ``POST /``), ``Authorization: Bearer {token}``; the body is the
raw image, or ``{"inputs": b64, "parameters": {"top_k": k, "function_to_apply": "softmax"}}``
(``huggingface_hub.InferenceClient`` sends the first without parameters, the second with).
One image a call. The answer is ``[{"label", "score"}]``: the model's own class names, best
first, ``top_k`` of them (5 by default), softmax probabilities.

Errors are ``{"error": message}``: 401 a missing or wrong token, 429 (+ Retry-After) over the
rate limit, 402 once the key's images are spent (out of credit), 503 ``{"error",
"estimated_time"}`` as while a model loads, 400 for bad input.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response

from ...classes import ClassNames
from ..decode import decode_base64
from ..errors import ApiError
from .base import Context, Scope, Wire, json_reply, request_body, request_key, set_billed

__all__ = ["HuggingFace"]

DEFAULT_TOP_K = 5
# A model "loading" (an injected 503) says it will be ready in this many seconds.
ESTIMATED_TIME_S = 1.0

_STATUS = {
    "missing_key": (401, "Invalid credentials in Authorization header"),
    "bad_key": (401, "Invalid credentials in Authorization header"),
    "rate": (429, "Rate limit reached. Please retry later."),
    "quota": (
        402,
        "You have exceeded your monthly included credits for Inference Providers.",
    ),
    "too_large": (413, None),
    "not_found": (404, "Not Found"),
    "method": (405, "Method Not Allowed"),
    "timeout": (408, None),
    "internal": (500, "Internal Server Error"),
    "unavailable": (503, None),
    "rejected": (400, None),  # a defence's refusals, told apart by error_type (below)
    "banned": (403, None),
}
# ``error_type`` beside ``error`` (as Hugging Face's text-generation errors carry one).
_ERROR_TYPES = {"rejected": "query_rejected", "banned": "key_banned"}


class HuggingFace(Wire):
    """The Hugging Face inference API's image classification."""

    name: ClassVar[str] = "hf"
    title: ClassVar[str] = "Hugging Face inference (image-classification)"

    def guarded(self, path: str) -> bool:
        return path == "/" or path.startswith("/models/")

    def is_call(self, method: str, path: str) -> bool:
        return method == "POST" and self.guarded(path)

    def credential(self, scope: Scope, headers: dict[bytes, bytes]) -> bytes | None:
        scheme, _, token = headers.get(b"authorization", b"").strip().partition(b" ")
        return token.strip() if scheme.lower() == b"bearer" and token.strip() else None

    def json_body(self, headers: dict[bytes, bytes]) -> bool:
        return b"json" in headers.get(b"content-type", b"").lower()

    def render(self, error: ApiError) -> tuple[int, dict[str, str], bytes]:
        status, message = _STATUS.get(error.kind, (400, None))
        body: dict[str, Any] = {"error": message or error.message}
        if error.kind == "unavailable":
            body["estimated_time"] = ESTIMATED_TIME_S
        if error.kind in _ERROR_TYPES:
            body["error_type"] = _ERROR_TYPES[error.kind]
        return status, dict(error.headers), json.dumps(body).encode("utf-8")

    def sample_answer(self) -> bytes:
        return json.dumps(
            [
                {"label": "golden retriever", "score": 0.93},
                {"label": "Labrador retriever", "score": 0.04},
            ]
        ).encode("utf-8")

    def install(self, app: FastAPI, ctx: Context) -> None:
        names = _class_names(ctx)

        def classify(request: Request) -> Response:
            image, top_k = _parse(request_body(request), request.headers.get("content-type", ""))
            out = ctx.labeller.label(request_key(request), [image])[0]
            if out.probs is None:
                raise ApiError(400, "cannot identify image file", kind="bad_image")
            set_billed(request, 1)
            order = np.argsort(-out.probs, kind="stable")[:top_k]
            return json_reply([{"label": names[i], "score": float(out.probs[i])} for i in order])

        for path in ("/models/{model_id:path}", "/"):
            app.add_api_route(
                path,
                classify,
                methods=["POST"],
                summary="Classify an image (Hugging Face inference, image-classification)",
                name=f"classify{path.count('/')}",
            )


def _class_names(ctx: Context) -> list[str]:
    names: ClassNames | None = ctx.labeller.model.class_names
    if names is None:  # the service refuses such models; kept for the type checker
        return [str(i) for i in range(ctx.labeller.model.num_classes)]
    return [c.name for c in names.classes]


def _invalid(message: str) -> ApiError:
    return ApiError(400, message, kind="invalid")


def _parse(body: bytes, content_type: str) -> tuple[bytes, int]:
    """The image and top_k: a raw image, or the JSON form with base64 ``inputs``."""
    if "json" not in content_type.lower():
        if not body:
            raise _invalid("The request body is empty: send the image bytes.")
        return body, DEFAULT_TOP_K
    try:
        doc: Any = json.loads(body)
    except (ValueError, RecursionError):
        raise _invalid("Could not parse the request body as JSON.") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), str):
        raise _invalid("inputs must be the image as a base64 string.")
    text: str = doc["inputs"]
    if text.startswith(("http://", "https://")):
        raise _invalid("Image URLs are not fetched here: send the image bytes or base64.")
    try:
        image = decode_base64(text)
    except ValueError:
        raise _invalid("inputs is not valid base64.") from None
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise _invalid("parameters must be an object.")
    top_k = params.get("top_k") or DEFAULT_TOP_K
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise _invalid("parameters.top_k must be an integer >= 1.")
    function = params.get("function_to_apply") or "softmax"
    if function != "softmax":
        raise _invalid(f"function_to_apply {function!r} is not served: only softmax.")
    return image, top_k
