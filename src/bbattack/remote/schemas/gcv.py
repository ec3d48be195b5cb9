"""Google Cloud Vision ``POST /v1/images:annotate`` with LABEL_DETECTION: up to 16 images a
call, the key in ``X-Goog-Api-Key``, scores 0-1, label levels ("Dog", "Mammal") as separate
labels with no hierarchy in the answer, per-image errors inside a 200."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import httpx

from ..errors import QuotaExhausted, RemoteAuthError, RemoteError
from ..retry import GarbledError, RetryableError, is_retryable_status, retry_after
from ..wire import MAX_QUOTED, Call, ImageError, Label, WireSchema, json_body, number, refusal

__all__ = [
    "ANNOTATE_PATH",
    "GOOGLE_VISION_ENDPOINT",
    "MAX_IMAGES_PER_CALL",
    "GoogleVision",
    "error_of",
    "labels_of",
    "request_body",
]

GOOGLE_VISION_ENDPOINT = "https://vision.googleapis.com/v1/images:annotate"
ANNOTATE_PATH = "/v1/images:annotate"
# Cloud Vision takes at most 16 images per synchronous call.
MAX_IMAGES_PER_CALL = 16


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


def labels_of(entry: Any) -> list[tuple[str, float]]:
    """(description, score) pairs of one successful per-image response; GarbledError if it is
    not one (proto3 JSON leaves an empty label list out, so a missing list means no labels)."""
    if not isinstance(entry, dict) or "error" in entry:
        raise GarbledError("not a labelled image response")
    anns = entry.get("labelAnnotations", [])
    if not isinstance(anns, list):
        raise GarbledError("labelAnnotations is not a list")
    out: list[tuple[str, float]] = []
    for a in anns:
        if not isinstance(a, dict):
            raise GarbledError("a label annotation is not an object")
        desc = a.get("description")
        if not isinstance(desc, str):
            raise GarbledError("a label annotation lacks description or score")
        try:
            score = number(a.get("score"))
        except GarbledError:
            raise GarbledError("a label annotation lacks description or score") from None
        out.append((desc, score))
    return out


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


class GoogleVision(WireSchema):
    """Cloud Vision's ``images:annotate``; a bare base URL gets ``/v1/images:annotate``."""

    name = "gcv"
    title = "Cloud Vision"
    max_images_per_call = MAX_IMAGES_PER_CALL
    auth = "X-Goog-Api-Key header"
    hierarchy = "levels"
    scale = "0-1"

    def resolve(self, url: httpx.URL) -> str:
        if url.path in ("", "/"):
            url = url.copy_with(path=ANNOTATE_PATH)
        return str(url)

    def request(self, images: Sequence[bytes]) -> Call:
        return Call(self.endpoint, self._headers(), request_body(images, self.max_results))

    def _headers(self) -> dict[str, str]:
        return {"X-Goog-Api-Key": self._key, "Content-Type": "application/json"}

    def split(self, response: httpx.Response, n: int) -> list[Any]:
        data = json_body(response)
        entries = data.get("responses") if isinstance(data, dict) else None
        if not isinstance(entries, list) or len(entries) != n:
            raise GarbledError(f"the body does not hold {n} responses")
        out: list[Any] = []
        for e in entries:
            if not isinstance(e, dict):
                raise GarbledError("a response is not an object")
            if "error" in e:
                err = e["error"]
                if not isinstance(err, dict):
                    raise GarbledError("an error entry is not an object")
                out.append(ImageError(str(err.get("code", "?")), str(err.get("message", ""))))
            else:
                labels_of(e)
                out.append(e)
        return out

    def decode(self, entry: Any) -> list[Label]:
        # Google ranks by topicality, not by score: its order is kept.
        return [Label(d, s) for d, s in labels_of(entry)[: self.max_results]]

    def failure(self, response: httpx.Response) -> Exception:
        """429 rate limit and 5xx: retried; 429 QUOTA_EXCEEDED: quota spent; 401, 403 or an
        API_KEY_* reason: the key is refused; any other 4xx: refused with the message."""
        r = response
        message, reason = error_of(r)
        what = f"HTTP {r.status_code} from {self.endpoint}: {message}"
        if (refused := refusal(reason, what)) is not None:  # QUERY_REJECTED, KEY_BANNED
            return refused
        if is_retryable_status(r.status_code, reason):
            return RetryableError(what, retry_after(r))
        if r.status_code == 429:
            return QuotaExhausted(f"{what} (the key's quota is spent)")
        if r.status_code in (401, 403) or (reason or "").startswith("API_KEY"):
            return RemoteAuthError(f"{what} (check the API key {self.key_hint()})")
        if r.status_code == 413:
            return RemoteError(f"{what} (try a smaller images_per_call)")
        return RemoteError(what)

    def probe_call(self) -> Call:
        # An empty batch: nothing to bill; the key is checked all the same.
        return Call(self.endpoint, self._headers(), json.dumps({"requests": []}).encode())
