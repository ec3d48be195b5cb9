"""Azure AI Vision Image Analysis 4.0, the ``tags`` feature.

``POST /computervision/imageanalysis:analyze?api-version=2023-10-01&features=tags`` (what
``azure-ai-vision-imageanalysis`` 1.0 sends; the GA version ``2024-02-01`` is taken too), key in
``Ocp-Apim-Subscription-Key``, the image as the raw body (``application/octet-stream``). A JSON
body ``{"url": ...}`` is refused: this service fetches nothing. One image a call, at most 20 MB,
50 to 16,000 pixels a side. The answer is ``{"modelVersion", "metadata": {"width", "height"},
"tagsResult": {"values": [{"name", "confidence"}]}}``: flat tags, lower case, scores 0-1.

Errors are ``{"error": {"code", "message", "innererror"?}}``: 401 for a missing or wrong key,
429 with ``Retry-After`` over the rate limit, 403 once the key's images are spent (Azure's
"Out of call volume quota"), 400 ``InvalidRequest`` for bad input.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.responses import Response

from ..core import sniff
from ..errors import ApiError
from .base import Context, Scope, Wire, json_reply, request_body, request_key, set_billed

__all__ = ["AzureVision"]

PATH = "/computervision/imageanalysis:analyze"
API_VERSIONS = ("2023-10-01", "2024-02-01")
MODEL_VERSION = "2023-10-01"
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MIN_SIDE, MAX_SIDE = 50, 16_000

# kind -> (HTTP status, error code, inner error code, message; None keeps the error's own).
_CODES: dict[str, tuple[int, str, str | None, str | None]] = {
    "missing_key": (
        401,
        "401",
        None,
        "Access denied due to missing subscription key. Make sure to include subscription key "
        "when making requests to an API.",
    ),
    "bad_key": (
        401,
        "401",
        None,
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
        "provide a valid key for an active subscription and use a correct regional API "
        "endpoint for your resource.",
    ),
    "rate": (429, "429", None, None),
    "quota": (403, "403", None, None),
    "too_large": (413, "InvalidRequest", "InvalidImageSize", None),
    "image_too_large": (400, "InvalidRequest", "InvalidImageSize", None),
    "bad_image": (400, "InvalidRequest", "InvalidImageFormat", "Image format is not valid."),
    "not_found": (404, "404", None, "Resource not found"),
    "method": (405, "405", None, None),
    "timeout": (408, "408", None, None),
    "internal": (500, "InternalServerError", None, "An unexpected error occurred."),
    # A defence's refusals (inner codes of bbattack's own, in Azure's error form).
    "rejected": (400, "InvalidRequest", "QueryRejected", None),
    "banned": (403, "Forbidden", "KeyBanned", None),
    "unavailable": (503, "ServiceUnavailable", None, None),
}


class AzureVision(Wire):
    """Azure AI Vision 4.0 ``imageanalysis:analyze``, tags."""

    name: ClassVar[str] = "azure"
    title: ClassVar[str] = "Azure AI Vision 4.0 (imageanalysis:analyze, tags)"

    def guarded(self, path: str) -> bool:
        return path.startswith("/computervision/")

    def is_call(self, method: str, path: str) -> bool:
        return method == "POST" and path == PATH

    def credential(self, scope: Scope, headers: dict[bytes, bytes]) -> bytes | None:
        return headers.get(b"ocp-apim-subscription-key")

    def json_body(self, headers: dict[bytes, bytes]) -> bool:
        return b"json" in headers.get(b"content-type", b"").lower()

    def render(self, error: ApiError) -> tuple[int, dict[str, str], bytes]:
        status, code, inner, message = _CODES.get(error.kind, (400, "InvalidRequest", None, None))
        if error.kind == "rate" and "Retry-After" in error.headers:
            message = (
                f"Rate limit is exceeded. Try again in {error.headers['Retry-After']} seconds."
            )
        if error.kind == "quota":
            message = "Out of call volume quota. Quota will be replenished in 1.00:00:00."
        err: dict[str, Any] = {"code": code, "message": message or error.message}
        if inner is not None:
            err["innererror"] = {"code": inner, "message": error.message}
        return status, dict(error.headers), json.dumps({"error": err}).encode("utf-8")

    def sample_answer(self) -> bytes:
        tags = [{"name": "dog", "confidence": 0.93}, {"name": "animal", "confidence": 0.9}]
        return json.dumps(
            {
                "modelVersion": MODEL_VERSION,
                "metadata": {"width": 640, "height": 480},
                "tagsResult": {"values": tags},
            }
        ).encode("utf-8")

    def install(self, app: FastAPI, ctx: Context) -> None:
        @app.post(PATH, summary="Analyze an image (Azure AI Vision 4.0, tags only)")
        def analyze(request: Request) -> Response:
            _check_query(request)
            body = request_body(request)
            if "json" in request.headers.get("content-type", "").lower():
                raise ApiError(
                    400,
                    "Image URLs are not supported here: send the image bytes as "
                    "application/octet-stream.",
                    kind="invalid",
                )
            if not body:
                raise ApiError(400, "The request body is empty: send the image bytes.")
            if len(body) > MAX_IMAGE_BYTES:
                raise ApiError(400, "The image is larger than 20 MB.", kind="image_too_large")
            head = sniff(body)
            if head is None:
                raise ApiError(400, "The image format is not supported.", kind="bad_image")
            _, width, height = head
            if not (min(width, height) >= MIN_SIDE and max(width, height) <= MAX_SIDE):
                raise ApiError(
                    400,
                    f"Image size {width}x{height} is not allowed: each side must be between "
                    f"{MIN_SIDE} and {MAX_SIDE} pixels.",
                    kind="image_too_large",
                )
            out = ctx.labeller.label(request_key(request), [body])[0]
            if out.probs is None:
                raise ApiError(400, "The image could not be decoded.", kind="bad_image")
            set_billed(request, 1)
            found = ctx.index.annotate(
                out.probs[None], threshold=ctx.threshold, max_results=len(ctx.index.mids)
            )[0]
            tags = [{"name": a.description.lower(), "confidence": round(a.score, 6)} for a in found]
            return json_reply(
                {
                    "modelVersion": MODEL_VERSION,
                    "metadata": {"width": width, "height": height},
                    "tagsResult": {"values": tags},
                },
                headers={"apim-request-id": request.headers.get("x-ms-client-request-id", "-")},
            )


def _check_query(request: Request) -> None:
    version = request.query_params.get("api-version")
    if version not in API_VERSIONS:
        raise ApiError(
            400,
            f"Unsupported api-version {version!r}: use one of {', '.join(API_VERSIONS)}.",
            kind="invalid",
        )
    features = [
        f.strip().lower() for f in request.query_params.get("features", "").split(",") if f.strip()
    ]
    if not features:
        raise ApiError(400, "The 'features' query parameter is required: features=tags.")
    other = sorted(set(features) - {"tags"})
    if other:
        raise ApiError(
            400, f"Not supported here: {', '.join(other)}; only the tags feature is served."
        )
