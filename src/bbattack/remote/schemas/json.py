"""Any JSON label API: the labels and scores are found with JMESPath expressions
(``--labels-path 'predictions[*].label' --scores-path 'predictions[*].score'``), one image a
call.

The request: by default the image's PNG bytes are the body (``Content-Type: image/png``).
``request_template`` instead gives a JSON body in which the string ``"$IMAGE"`` stands for the
base64 PNG and ``"$MAX_RESULTS"`` for the number of labels asked, e.g.
``{"instances": [{"b64": "$IMAGE"}], "parameters": {"top_k": "$MAX_RESULTS"}}``.
The key goes in a header: ``auth`` is ``"NAME: VALUE"`` with ``{key}`` standing for it
(default ``Authorization: Bearer {key}``). ``score_scale`` divides the scores (100 for an API
that answers percentages). Errors are read as plain HTTP: 429 and 5xx retried (Retry-After
honoured), 401/403 a refused key, 402 the quota spent, other 4xx refused. There is no free
pre-flight call: the first query is the check.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import httpx
import jmespath
from jmespath.exceptions import JMESPathError

from ...errors import UserInputError
from ..retry import GarbledError
from ..wire import (
    Call,
    Label,
    WireSchema,
    generic_failure,
    json_body,
    sort_best_first,
    text_of,
    unit_score,
)

__all__ = ["GenericJson"]

IMAGE, MAX_RESULTS = "$IMAGE", "$MAX_RESULTS"
DEFAULT_AUTH = "Authorization: Bearer {key}"


def _compile(name: str, expr: str | None) -> Any:
    if not expr:
        raise UserInputError(f"--schema json needs --{name} (a JMESPath expression)")
    try:
        return jmespath.compile(expr)
    except JMESPathError as e:
        raise UserInputError(f"--{name} {expr!r} is not a JMESPath expression: {e}") from None


def _fill(template: Any, image: str, max_results: int) -> Any:
    """The template with ``"$IMAGE"`` and ``"$MAX_RESULTS"`` replaced."""
    if template == IMAGE:
        return image
    if template == MAX_RESULTS:
        return max_results
    if isinstance(template, dict):
        return {k: _fill(v, image, max_results) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, image, max_results) for v in template]
    return template


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [] if v is None else [v]


class GenericJson(WireSchema):
    """A JSON API described by its options (see the module)."""

    name = "json"
    title = "JSON API"
    max_images_per_call = 1
    auth = "a header (default Authorization: Bearer)"
    hierarchy = "flat"
    scale = "any (score_scale)"

    def __init__(
        self,
        endpoint: str,
        api_key: str,
        max_results: int,
        *,
        labels_path: str | None = None,
        scores_path: str | None = None,
        request_template: str | None = None,
        auth: str = DEFAULT_AUTH,
        score_scale: float = 1.0,
    ) -> None:
        super().__init__(endpoint, api_key, max_results)
        self.labels_path, self.scores_path = labels_path, scores_path
        self._labels, self._scores = (
            _compile("labels-path", labels_path),
            _compile("scores-path", scores_path),
        )
        self.request_template = request_template
        self._template: Any = None
        if request_template is not None:
            try:
                self._template = json.loads(request_template)
            except ValueError as e:
                raise UserInputError(f"the request template is not JSON: {e}") from None
            if IMAGE not in request_template:
                raise UserInputError(f'the request template has no "{IMAGE}" for the image')
        name, sep, value = auth.partition(":")
        if not sep or not name.strip() or "{key}" not in value:
            raise UserInputError(f'auth must be "HEADER: VALUE" with {{key}} in it, got {auth!r}')
        self._auth = (name.strip(), value.strip())
        if not (score_scale > 0 and score_scale < float("inf")):
            raise UserInputError(f"score_scale must be a positive number, got {score_scale}")
        self.score_scale = float(score_scale)

    @property
    def tag(self) -> str:
        what = json.dumps(
            [self.request_template, self.labels_path, self.scores_path, self.score_scale]
        )
        return f"json:{hashlib.sha256(what.encode()).hexdigest()[:16]}"

    def request(self, images: Sequence[bytes]) -> Call:
        (png,) = images
        headers = {self._auth[0]: self._auth[1].replace("{key}", self._key)}
        if self._template is None:
            return Call(self.endpoint, headers | {"Content-Type": "image/png"}, png)
        body = _fill(self._template, base64.b64encode(png).decode("ascii"), self.max_results)
        content = json.dumps(body).encode("utf-8")
        return Call(self.endpoint, headers | {"Content-Type": "application/json"}, content)

    def split(self, response: httpx.Response, n: int) -> list[Any]:
        data = json_body(response)
        if n != 1:
            raise GarbledError("one image per call")
        self.decode(data)
        return [data]

    def decode(self, entry: Any) -> list[Label]:
        labels = _as_list(self._labels.search(entry))
        scores = _as_list(self._scores.search(entry))
        if len(labels) != len(scores):
            raise GarbledError(
                f"--labels-path found {len(labels)} labels and --scores-path {len(scores)} scores"
            )
        if not all(isinstance(v, str) for v in labels):
            raise GarbledError("--labels-path found something other than strings")
        out = [
            Label(lab, unit_score(s, self.score_scale))
            for lab, s in zip(labels, scores, strict=True)
        ]
        return sort_best_first(out, self.max_results)

    def failure(self, response: httpx.Response) -> Exception:
        return generic_failure(self, response, _message(response))


def _message(r: httpx.Response) -> str:
    """The message of a JSON error body, in the usual places; the raw text otherwise."""
    try:
        body = json.loads(r.content)
    except ValueError:
        return text_of(r)
    for path in ("error.message", "error", "message", "detail", "errorMessage"):
        v = jmespath.search(path, body) if isinstance(body, dict) else None
        if isinstance(v, str) and v:
            return v
    return text_of(r)
