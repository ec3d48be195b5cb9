"""Azure AI Vision Image Analysis 4.0, tags: ``POST {endpoint}/computervision/
imageanalysis:analyze?api-version=2023-10-01&features=tags`` with the image's bytes as the
body, the key in ``Ocp-Apim-Subscription-Key``; ``tagsResult.values[].{name, confidence}``
(0-1, flat); errors ``{"error": {"code", "message"}}``, 429 with Retry-After."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx

from ..retry import GarbledError
from ..wire import (
    Call,
    Label,
    WireSchema,
    flat_labels,
    generic_failure,
    json_body,
    refusal,
    text_of,
)

__all__ = ["ANALYZE_PATH", "API_VERSION", "AzureVision"]

ANALYZE_PATH = "/computervision/imageanalysis:analyze"
API_VERSION = "2023-10-01"


def error_of(r: httpx.Response) -> tuple[str, str]:
    """The code (the inner one where given) and message of an Azure error body."""
    try:
        err = json.loads(r.content)["error"]
        code = str(err.get("code", ""))
        inner = err.get("innererror")
        if isinstance(inner, dict) and inner.get("code"):
            code = str(inner["code"])
        return code, str(err.get("message", "")) or r.reason_phrase
    except (ValueError, KeyError, TypeError, AttributeError):
        return "", text_of(r)


class AzureVision(WireSchema):
    """The resource's base URL (``https://NAME.cognitiveservices.azure.com``) gets the
    analyze path; ``api-version`` and ``features=tags`` are added where the URL lacks them."""

    name = "azure"
    title = "Azure AI Vision"
    max_images_per_call = 1
    auth = "Ocp-Apim-Subscription-Key header"
    hierarchy = "flat"
    scale = "0-1"

    def resolve(self, url: httpx.URL) -> str:
        if not url.path.endswith(":analyze"):
            url = url.copy_with(path=url.path.rstrip("/") + ANALYZE_PATH)
        if "api-version" not in url.params:
            url = url.copy_add_param("api-version", API_VERSION)
        if "features" not in url.params:
            url = url.copy_add_param("features", "tags")
        return str(url)

    def _call(self, content: bytes) -> Call:
        headers = {
            "Ocp-Apim-Subscription-Key": self._key,
            "Content-Type": "application/octet-stream",
        }
        return Call(self.endpoint, headers, content)

    def request(self, images: Sequence[bytes]) -> Call:
        (png,) = images
        return self._call(png)

    def split(self, response: httpx.Response, n: int) -> list[Any]:
        data = json_body(response)
        if n != 1 or not isinstance(data, dict):
            raise GarbledError("the body is not an analysis result")
        self.decode(data)
        return [data]

    def decode(self, entry: Any) -> list[Label]:
        tags = entry.get("tagsResult") if isinstance(entry, dict) else None
        values = tags.get("values", []) if isinstance(tags, dict) else None
        if not isinstance(values, list):
            raise GarbledError("tagsResult.values is not a list")
        return flat_labels(
            values, ("name",), "confidence", "a tag lacks its name", self.max_results
        )

    def failure(self, response: httpx.Response) -> Exception:
        """429 and 5xx retried (Retry-After); 401 a refused key; 403 with a quota code or
        message ("Out of call volume quota") the quota spent, another 403 a refused key."""
        code, message = error_of(response)
        text = f"{code}: {message}" if code else message
        what = f"HTTP {response.status_code} from {self.where()}: {text}"
        if (refused := refusal(code, what)) is not None:  # inner QueryRejected, KeyBanned
            return refused
        spent = response.status_code == 403 and "quota" in f"{code} {message}".lower()
        return generic_failure(self, response, text, quota=spent)

    def probe_call(self) -> Call:
        # No image: the key is checked first, then the empty body refused (400), unbilled.
        return self._call(b"")
