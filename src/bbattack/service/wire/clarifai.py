"""Clarifai predict: ``PostModelOutputs`` over HTTP+JSON.

``POST /v2/users/{user}/apps/{app}/models/{model}/outputs`` (also ``/v2/models/{model}/outputs``
and either with ``/versions/{version}``), ``Authorization: Key {PAT}``, body
``{"inputs": [{"data": {"image": {"base64": ...}}}], "model": {"output_info": {"output_config":
{"max_concepts", "min_value"}}}}`` with up to 128 inputs (what ``clarifai-grpc``'s JSON channel
sends). The answer is ``{"status": {"code": 10000, "description": "Ok"}, "outputs": [{"status",
"input", "data": {"concepts": [{"id", "name", "value", "app_id"}]}}]}``: flat concepts, lower
case, values 0-1.

Clarifai's status codes carry the errors, in the body's ``status`` (HTTP status beside it):
11001 a missing or wrong key (401), 11005 throttled (429 + Retry-After), 11004 the key's images
are spent (402, the monthly cap), 11102 a malformed call (400), 30300 an image that does not
decode (that output's status; the call's is 10010 "Mixed Success", or 10020 if none decoded).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.responses import Response

from ..decode import decode_base64
from ..errors import ApiError
from .base import Context, Scope, Wire, json_reply, request_body, request_key, set_billed

__all__ = ["Clarifai"]

MAX_INPUTS = 128
DEFAULT_MAX_CONCEPTS = 20
_PATH = re.compile(
    r"^/v2/(?:users/[^/]+/apps/[^/]+/)?models/(?P<model>[^/]+)(?:/versions/[^/]+)?/outputs$"
)
_PATHS = (
    "/v2/users/{user_id}/apps/{app_id}/models/{model_id}/outputs",
    "/v2/users/{user_id}/apps/{app_id}/models/{model_id}/versions/{version_id}/outputs",
    "/v2/models/{model_id}/outputs",
    "/v2/models/{model_id}/versions/{version_id}/outputs",
)

# kind -> (HTTP status, Clarifai status code, description).
_CODES: dict[str, tuple[int, int, str]] = {
    "missing_key": (401, 11001, "Invalid API key or Invalid API key/application pair"),
    "bad_key": (401, 11001, "Invalid API key or Invalid API key/application pair"),
    "rate": (429, 11005, "Making too many requests"),
    "quota": (402, 11004, "Monthly usage limit exceeded"),
    "too_large": (413, 11102, "Invalid request"),
    "too_many_images": (400, 11102, "Invalid request"),
    "bad_image": (400, 30300, "Failure to process input bytes"),
    "not_found": (404, 11101, "Resource does not exist"),
    "method": (405, 11103, "Method not allowed"),
    "timeout": (408, 11102, "Invalid request"),
    "internal": (500, 98004, "Internal server issue"),
    "unavailable": (503, 10030, "Try again"),
    # A defence's refusals: status codes of bbattack's own (Clarifai publishes none), outside
    # the ranges clients read as auth, quota or throttling.
    "rejected": (400, 11200, "Query rejected"),
    "banned": (403, 11201, "API key banned"),
}
_OWN_DETAILS = frozenset(
    {"invalid", "too_many_images", "bad_image", "image_too_large", "rejected", "banned"}
)


def _status(code: int, description: str, details: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"code": code, "description": description}
    if details:
        out["details"] = details
    return out


class Clarifai(Wire):
    """Clarifai's ``PostModelOutputs``."""

    name: ClassVar[str] = "clarifai"
    title: ClassVar[str] = "Clarifai (PostModelOutputs, concepts)"
    max_images: ClassVar[int] = MAX_INPUTS

    def guarded(self, path: str) -> bool:
        return path.startswith("/v2/")

    def is_call(self, method: str, path: str) -> bool:
        return method == "POST" and _PATH.match(path) is not None

    def credential(self, scope: Scope, headers: dict[bytes, bytes]) -> bytes | None:
        scheme, _, token = headers.get(b"authorization", b"").strip().partition(b" ")
        return token.strip() if scheme.lower() == b"key" and token.strip() else None

    def render(self, error: ApiError) -> tuple[int, dict[str, str], bytes]:
        status, code, description = _CODES.get(error.kind, (400, 11102, "Invalid request"))
        # Details only where the message is the call's own (not the gateway's Google wording).
        details = error.message if error.kind in _OWN_DETAILS else ""
        body = {"status": _status(code, description, details), "outputs": []}
        return status, dict(error.headers), json.dumps(body).encode("utf-8")

    def sample_answer(self) -> bytes:
        concepts = [{"id": "n02084071", "name": "dog", "value": 0.93, "app_id": "main"}]
        output = {"status": _status(10000, "Ok"), "data": {"concepts": concepts}}
        return json.dumps({"status": _status(10000, "Ok"), "outputs": [output]}).encode("utf-8")

    def install(self, app: FastAPI, ctx: Context) -> None:
        def outputs(request: Request) -> Response:
            model = _PATH.match(request.url.path)
            images, max_concepts, min_value = _parse(request_body(request), ctx)
            found = ctx.labeller.label(request_key(request), images)
            good = [o for o in found if o.probs is not None]
            set_billed(request, len(good))
            results: list[dict[str, Any]] = []
            for out in found:
                entry: dict[str, Any] = {
                    "id": uuid.uuid4().hex,
                    "model": {"id": model["model"] if model else ""},
                    "input": {"id": uuid.uuid4().hex, "data": {"image": {}}},
                }
                if out.probs is None:
                    entry["status"] = _status(30300, "Failure to process input bytes")
                    entry["data"] = {}
                else:
                    labels = ctx.index.annotate(
                        out.probs[None], threshold=min_value, max_results=max_concepts
                    )[0]
                    entry["status"] = _status(10000, "Ok")
                    entry["data"] = {
                        "concepts": [_concept(a.mid, a.description, a.score) for a in labels]
                    }
                results.append(entry)
            if len(good) == len(images):
                status, http = _status(10000, "Ok"), 200
            elif good:
                status, http = _status(10010, "Mixed Success"), 200
            else:
                status, http = _status(10020, "Failure"), 400
            return json_reply({"status": status, "outputs": results}, status=http)

        for path in _PATHS:
            app.add_api_route(
                path,
                outputs,
                methods=["POST"],
                summary="Predict concepts (Clarifai PostModelOutputs)",
                name=f"outputs{path.count('/')}{'v' if 'versions' in path else ''}",
            )


def _concept(mid: str, description: str, score: float) -> dict[str, Any]:
    cid = mid.rsplit("/", 1)[-1]
    return {"id": cid, "name": description.lower(), "value": round(score, 6), "app_id": "main"}


def _invalid(message: str) -> ApiError:
    return ApiError(400, message, kind="invalid")


def _parse(body: bytes, ctx: Context) -> tuple[list[bytes], int, float]:
    """The images, max_concepts and min_value of a call, checked whole before any billing."""
    try:
        doc: Any = json.loads(body)
    except (ValueError, RecursionError):
        raise _invalid("Could not parse the request body as JSON.") from None
    inputs = doc.get("inputs") if isinstance(doc, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise _invalid("inputs must hold at least one input.")
    if len(inputs) > ctx.max_images:
        raise ApiError(
            400,
            f"Too many inputs in one call: {len(inputs)} (at most {ctx.max_images}).",
            kind="too_many_images",
        )
    images: list[bytes] = []
    for i, item in enumerate(inputs):
        image = item.get("data", {}).get("image") if isinstance(item, dict) else None
        if not isinstance(image, dict):
            raise _invalid(f"inputs[{i}].data.image is required.")
        if "base64" not in image:
            raise _invalid(f"inputs[{i}]: image URLs are not fetched here; send data.image.base64.")
        try:
            images.append(decode_base64(str(image["base64"])))
        except ValueError:
            raise _invalid(f"inputs[{i}].data.image.base64 is not valid base64.") from None
    config: Any = doc.get("model", {})
    for step in ("output_info", "output_config"):
        config = config.get(step, {}) if isinstance(config, dict) else {}
    if not isinstance(config, dict):
        config = {}
    max_concepts = config.get("max_concepts") or DEFAULT_MAX_CONCEPTS
    min_value = config.get("min_value") or ctx.threshold
    if isinstance(max_concepts, bool) or not isinstance(max_concepts, int) or max_concepts < 1:
        raise _invalid("model.output_info.output_config.max_concepts must be an integer >= 1.")
    if isinstance(min_value, bool) or not isinstance(min_value, int | float):
        raise _invalid("model.output_info.output_config.min_value must be a number in [0, 1].")
    if not 0.0 <= float(min_value) <= 1.0:
        raise _invalid("model.output_info.output_config.min_value must be a number in [0, 1].")
    return images, max_concepts, float(min_value)
