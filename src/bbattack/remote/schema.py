"""The wire format of ``POST …/v1/images:annotate`` (LABEL_DETECTION): the endpoint, the
request body, and the checked reading of answers and error bodies."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from typing import Any

import httpx

from ..errors import UserInputError
from .retry import GarbledError

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
    "parse_batch",
    "request_body",
    "resolve_endpoint",
]

Labels = list[tuple[str, float]]

GOOGLE_VISION_ENDPOINT = "https://vision.googleapis.com/v1/images:annotate"
ANNOTATE_PATH = "/v1/images:annotate"
ENDPOINT_ENV = "BBATTACK_ENDPOINT"
API_KEY_ENV = "BBATTACK_API_KEY"
# Cloud Vision takes at most 16 images per synchronous call.
MAX_IMAGES_PER_CALL = 16
# Server error text quoted in exceptions is cut here: an HTML error page is not a message.
MAX_QUOTED = 300


def resolve_endpoint(endpoint: str | None) -> str:
    """The annotate URL: ``endpoint`` or ``$BBATTACK_ENDPOINT``; a bare base URL gets
    ``/v1/images:annotate``. UserInputError for a missing or non-http(s) URL, or one that
    carries the key."""
    raw = (endpoint if endpoint is not None else os.environ.get(ENDPOINT_ENV, "")).strip()
    if not raw:
        raise UserInputError(
            f"no endpoint: pass endpoint or set {ENDPOINT_ENV} "
            f"(Google's is {GOOGLE_VISION_ENDPOINT})"
        )
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as e:
        raise UserInputError(f"endpoint {raw!r} is not a URL: {e}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise UserInputError(f"endpoint must be an http(s) URL, got {raw!r}")
    if "key" in url.params:
        raise UserInputError(
            f"put the API key in api_key or {API_KEY_ENV}, not in the endpoint URL "
            "(URLs end up in logs)"
        )
    if url.path in ("", "/"):
        url = url.copy_with(path=ANNOTATE_PATH)
    return str(url)


def request_body(pngs: Sequence[bytes], max_results: int) -> bytes:
    """The JSON body asking for up to ``max_results`` labels of each PNG image."""
    body = {
        "requests": [
            {
                "image": {"content": base64.b64encode(png).decode("ascii")},
                "features": [{"type": "LABEL_DETECTION", "maxResults": max_results}],
            }
            for png in pngs
        ]
    }
    return json.dumps(body).encode("utf-8")


def labels_of(entry: Any) -> Labels:
    """(description, score) pairs of one successful per-image response; GarbledError if it is
    not one (proto3 JSON leaves an empty label list out, so a missing list means no labels)."""
    if not isinstance(entry, dict) or "error" in entry:
        raise GarbledError("not a labelled image response")
    anns = entry.get("labelAnnotations", [])
    if not isinstance(anns, list):
        raise GarbledError("labelAnnotations is not a list")
    out: Labels = []
    for a in anns:
        if not isinstance(a, dict):
            raise GarbledError("a label annotation is not an object")
        desc, score = a.get("description"), a.get("score")
        if (
            not isinstance(desc, str)
            or isinstance(score, bool)
            or not isinstance(score, int | float)
        ):
            raise GarbledError("a label annotation lacks description or score")
        out.append((desc, float(score)))
    return out


def parse_batch(response: httpx.Response, n: int) -> list[dict[str, Any]]:
    """The per-image entries of a 200 answer to ``n`` images, checked; GarbledError otherwise."""
    try:
        data = json.loads(response.content)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both
        raise GarbledError("the body is not JSON (truncated?)") from None
    entries = data.get("responses") if isinstance(data, dict) else None
    if not isinstance(entries, list) or len(entries) != n:
        raise GarbledError(f"the body does not hold {n} responses")
    for e in entries:
        if not isinstance(e, dict):
            raise GarbledError("a response is not an object")
        if "error" in e:
            if not isinstance(e["error"], dict):
                raise GarbledError("an error entry is not an object")
        else:
            labels_of(e)
    return entries


def error_of(response: httpx.Response) -> tuple[str, str | None]:
    """The message and the ErrorInfo reason of a Google-style error body (or the raw text)."""
    try:
        err = response.json()["error"]
        message = str(err.get("message", "")) or response.reason_phrase
        reason = None
        for d in err.get("details", []) or []:
            if isinstance(d, dict) and isinstance(d.get("reason"), str):
                reason = d["reason"]
                break
        return message[:MAX_QUOTED], reason
    except (ValueError, KeyError, TypeError, AttributeError):
        text = response.text.strip()[:MAX_QUOTED]
        return text or response.reason_phrase, None
