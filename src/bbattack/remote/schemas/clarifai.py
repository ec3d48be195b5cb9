"""Clarifai predict: ``POST /v2/users/{u}/apps/{a}/models/{m}/outputs`` (or
``/v2/models/{m}/outputs`` with an app-scoped key), ``Authorization: Key {PAT}``, up to 128
images a call, ``outputs[i].data.concepts[].{id, name, value}`` (0-1, flat); every answer
carries ``status.code``: 10000 ok, 11005 throttled, 11001/11002 a bad key, 11003/11004 the
hourly or monthly cap spent."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import httpx

from ...errors import UserInputError
from ..errors import QuotaExhausted, RemoteAuthError, RemoteError
from ..retry import GarbledError, RetryableError, retry_after
from ..wire import (
    MAX_QUOTED,
    Call,
    ImageError,
    Label,
    WireSchema,
    flat_labels,
    json_body,
    refusal,
    text_of,
)

__all__ = ["Clarifai", "status_failure"]

OK, MIXED = 10000, 10010
# Clarifai's status codes (its API reference, "Status Codes").
_THROTTLED = frozenset({11005})
_AUTH = frozenset({11000, 11001, 11002, 11007, 11008, 11009, 11010})
_QUOTA = frozenset({11003, 11004, 11006})
# A defence's refusals as ``bbattack serve`` sends them (codes of its own).
_REFUSED = {11200: "query_rejected", 11201: "key_banned"}


def status_of(body: Any) -> tuple[int | None, str]:
    """``status.code`` and its description (and details) of a Clarifai body."""
    st = body.get("status") if isinstance(body, dict) else None
    if not isinstance(st, dict):
        return None, ""
    code = st.get("code")
    text = " ".join(str(st[k]) for k in ("description", "details") if st.get(k))
    return (code if isinstance(code, int) and not isinstance(code, bool) else None), text


def status_failure(
    schema: WireSchema, http: int, code: int | None, text: str, r: httpx.Response | None
) -> Exception:
    """What a Clarifai status (and the HTTP status it came with) means to bbattack."""
    what = f"HTTP {http} from {schema.where()}: status {code}: {text[:MAX_QUOTED]}"
    wait = retry_after(r) if r is not None else None
    if (refused := refusal(_REFUSED.get(code or 0), what)) is not None:
        return refused
    if code in _THROTTLED or http == 429 or http >= 500:
        return RetryableError(what, wait)
    if code in _QUOTA:
        return QuotaExhausted(f"{what} (the key's quota is spent)")
    if code in _AUTH or http in (401, 403):
        return RemoteAuthError(f"{what} (check the key {schema.key_hint()})")
    return RemoteError(what)


class Clarifai(WireSchema):
    """The endpoint is the model's ``…/outputs`` URL (a version's too)."""

    name = "clarifai"
    title = "Clarifai"
    max_images_per_call = 128
    auth = "Authorization: Key PAT"
    hierarchy = "flat"
    scale = "0-1"

    def resolve(self, url: httpx.URL) -> str:
        if not (url.path.startswith("/v2/") and url.path.rstrip("/").endswith("/outputs")):
            raise UserInputError(
                "a Clarifai endpoint is the model's outputs URL: "
                "https://api.clarifai.com/v2/users/USER/apps/APP/models/MODEL/outputs "
                f"(or /v2/models/MODEL/outputs), got {url}"
            )
        return str(url)

    def _call(self, body: dict[str, Any]) -> Call:
        headers = {"Authorization": f"Key {self._key}", "Content-Type": "application/json"}
        return Call(self.endpoint, headers, json.dumps(body).encode("utf-8"))

    def request(self, images: Sequence[bytes]) -> Call:
        inputs = [
            {"data": {"image": {"base64": base64.b64encode(p).decode("ascii")}}} for p in images
        ]
        config = {"output_info": {"output_config": {"max_concepts": self.max_results}}}
        return self._call({"inputs": inputs, "model": config})

    def split(self, response: httpx.Response, n: int) -> list[Any]:
        data = json_body(response)
        code, text = status_of(data)
        if code not in (OK, MIXED):
            raise status_failure(self, response.status_code, code, text, response)
        outputs = data.get("outputs")
        if not isinstance(outputs, list) or len(outputs) != n:
            raise GarbledError(f"the body does not hold {n} outputs")
        out: list[Any] = []
        for o in outputs:
            c, t = status_of(o)
            if c is not None and c != OK:
                out.append(ImageError(str(c), t))
                continue
            self.decode(o)
            out.append(o)
        return out

    def decode(self, entry: Any) -> list[Label]:
        data = entry.get("data", {}) if isinstance(entry, dict) else None
        concepts = data.get("concepts", []) if isinstance(data, dict) else None
        if not isinstance(concepts, list):
            raise GarbledError("data.concepts is not a list")
        return flat_labels(
            concepts, ("name", "id"), "value", "a concept lacks its name", self.max_results
        )

    def failure(self, response: httpx.Response) -> Exception:
        try:
            code, text = status_of(json.loads(response.content))
        except ValueError:
            code, text = None, ""
        return status_failure(self, response.status_code, code, text or text_of(response), response)

    def probe_call(self) -> Call:
        # No input: the key is checked, then the request refused; nothing is predicted.
        return self._call({"inputs": []})
