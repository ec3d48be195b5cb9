"""Hugging Face inference, image classification: ``POST /models/{id}`` (the serverless API or
the router) or any Inference Endpoint URL, ``Authorization: Bearer {token}``, the image's
bytes as the body; the answer ``[{"label", "score"}]`` (0-1, the model's own label set).
503 with ``estimated_time`` while the model loads: wait that long and retry; 429 retried;
402: the credits are spent. ``every_class`` (``--threat ql``) sends the API's JSON form
instead, ``{"inputs": base64, "parameters": {"top_k": max_results, "function_to_apply":
"softmax"}}``: every class with its probability, where max_results is at least the model's
number of classes (:mod:`bbattack.targets.every_class` reads it as a score vector)."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from typing import Any

import httpx

from ...errors import UserInputError
from ..retry import GarbledError, RetryableError, retry_after
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

__all__ = ["HuggingFace"]


def error_of(r: httpx.Response) -> tuple[str, float | None]:
    """The message and ``estimated_time`` (seconds, while a model loads) of an error body."""
    try:
        body = json.loads(r.content)
    except ValueError:
        return text_of(r), None
    if not isinstance(body, dict):
        return text_of(r), None
    err = body.get("error", "")
    message = "; ".join(map(str, err)) if isinstance(err, list) else str(err)
    t = body.get("estimated_time")
    if isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t) and t >= 0:
        return message or text_of(r), float(t)
    return message or text_of(r), None


def _error_type(r: httpx.Response) -> object:
    """An error body's ``error_type`` (``query_rejected``, ``key_banned``), if any."""
    try:
        body = json.loads(r.content)
    except ValueError:
        return None
    return body.get("error_type") if isinstance(body, dict) else None


class HuggingFace(WireSchema):
    """The endpoint is the model's URL (``https://router.huggingface.co/hf-inference/models/
    google/vit-base-patch16-224``) or a dedicated Inference Endpoint's."""

    name = "hf"
    title = "Hugging Face"
    max_images_per_call = 1
    auth = "Authorization: Bearer token"
    hierarchy = "flat"
    scale = "0-1"
    lists_every_class = True

    def __init__(
        self, endpoint: str, api_key: str, max_results: int, every_class: bool = False
    ) -> None:
        super().__init__(endpoint, api_key, max_results)
        # Ask for top_k = max_results labels with softmax scores (the API's JSON form): every
        # class where max_results is at least the model's number of classes.
        self.every_class = every_class

    @property
    def tag(self) -> str:
        return "hf+top_k" if self.every_class else self.name

    def resolve(self, url: httpx.URL) -> str:
        if url.path in ("", "/"):
            raise UserInputError(
                "a Hugging Face endpoint is the model's URL, e.g. "
                f"https://router.huggingface.co/hf-inference/models/MODEL_ID; got {url}"
            )
        return str(url)

    def _call(self, content: bytes) -> Call:
        headers = {"Authorization": f"Bearer {self._key}", "Content-Type": "image/png"}
        return Call(self.endpoint, headers, content)

    def request(self, images: Sequence[bytes]) -> Call:
        (png,) = images
        if not self.every_class:
            return self._call(png)
        params = {"top_k": self.max_results, "function_to_apply": "softmax"}
        body = {"inputs": base64.b64encode(png).decode("ascii"), "parameters": params}
        headers = {"Authorization": f"Bearer {self._key}", "Content-Type": "application/json"}
        return Call(self.endpoint, headers, json.dumps(body).encode("utf-8"))

    def split(self, response: httpx.Response, n: int) -> list[Any]:
        data = json_body(response)
        if n != 1:
            raise GarbledError("one image per call")
        self.decode(data)
        return [data]

    def decode(self, entry: Any) -> list[Label]:
        # Some deployments wrap one image's list in another.
        if isinstance(entry, list) and len(entry) == 1 and isinstance(entry[0], list):
            entry = entry[0]
        if not isinstance(entry, list):
            raise GarbledError("the answer is not a list of labels")
        return flat_labels(entry, ("label",), "score", "an item lacks its label", self.max_results)

    def failure(self, response: httpx.Response) -> Exception:
        message, eta = error_of(response)
        what = f"HTTP {response.status_code} from {self.where()}: {message}"
        if (refused := refusal(_error_type(response), what)) is not None:
            return refused
        if response.status_code == 503 and eta is not None:
            what = f"HTTP 503 from {self.where()}: {message} (loading, about {eta:g} s)"
            return RetryableError(what, max(eta, retry_after(response) or 0.0))
        return generic_failure(self, response, message)

    def probe_call(self) -> Call:
        # No image: the token is checked first, then the empty body refused (400).
        return self._call(b"")
