"""The wire schema of a label API: everything about one vendor's format that the shared
:class:`~bbattack.remote.HttpLabelTarget` (caps, batching, concurrency, retries, journal,
spend) does not decide.

A schema builds each HTTP request (batching as the API allows, with its authentication),
splits a 200 answer into one entry per image, decodes an entry into labels with scores on a
0-1 scale (and each label's ancestors where the API gives them), maps the API's error and
quota signals to bbattack's (:class:`~.retry.RetryableError`, :class:`~.errors.QuotaExhausted`,
:class:`~.errors.RemoteAuthError`, :class:`~.errors.RemoteError`) and says whether a free
pre-flight call exists. Schemas live in :mod:`bbattack.remote.schemas`, one file per API.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import httpx

from ..errors import KeyBanned, QueryRejected, UserInputError
from .errors import QuotaExhausted, RemoteAuthError, RemoteError
from .prices import PRICES, Price
from .retry import GarbledError, RetryableError, retry_after

__all__ = [
    "MAX_QUOTED",
    "Call",
    "ImageError",
    "Label",
    "WireSchema",
    "check_http_url",
    "flat_labels",
    "generic_failure",
    "json_body",
    "number",
    "refusal",
    "sort_best_first",
    "text_of",
    "unit_score",
]

# Server error text quoted in exceptions is cut here: an HTML error page is not a message.
MAX_QUOTED = 300


class Label(NamedTuple):
    """One label of one image: its name, its score in [0, 1], and its ancestors (nearest
    first) where the API names them (Rekognition's ``Parents``); empty otherwise."""

    name: str
    score: float
    ancestors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Call:
    """One HTTP request, ready to send (headers include the authentication)."""

    url: str
    headers: dict[str, str]
    content: bytes
    method: str = "POST"


@dataclass(frozen=True)
class ImageError:
    """An image that a 200 answer answered with an error (not billed)."""

    code: str
    message: str


class WireSchema(ABC):
    """One label API's wire format. Subclasses set the class attributes and implement
    :meth:`request`, :meth:`split`, :meth:`decode` and :meth:`failure`.

    ``endpoint`` is the user's URL, completed by :meth:`resolve` (a bare base URL gets the
    API's path); ``api_key`` is the secret as given (``AKID:SECRET`` for AWS)."""

    name: ClassVar[str]
    title: ClassVar[str]  # the API's name, for messages
    max_images_per_call: ClassVar[int]
    auth: ClassVar[str]  # how the key travels, for the docs
    hierarchy: ClassVar[str]  # "parents" (every ancestor named), "levels", "flat"
    scale: ClassVar[str]  # the API's own score scale, for the docs
    # Whether a request can ask for every class with its score (the QL view: Hugging Face's
    # top_k); not where a score threshold cuts the answers or labels form a hierarchy.
    lists_every_class: ClassVar[bool] = False

    def __init__(self, endpoint: str, api_key: str, max_results: int) -> None:
        self.endpoint = self.resolve(check_http_url(endpoint))
        self._key = api_key
        self.max_results = max_results

    @property
    def price(self) -> Price:
        return PRICES[self.name]

    @property
    def tag(self) -> str:
        """What, besides the endpoint, decides an answer: part of the journal's keys, so that
        answers of different APIs (or request shapes) never mix."""
        return self.name

    def resolve(self, url: httpx.URL) -> str:
        """The URL the calls go to; a schema completes a bare base URL with its path."""
        return str(url)

    def key_hint(self) -> str:
        """The key, shortened for messages: never the whole secret."""
        return self._key[: min(4, len(self._key) // 2)] + "…"

    @abstractmethod
    def request(self, images: Sequence[bytes]) -> Call:
        """The request for ``images`` (PNG bytes, at most ``max_images_per_call``). Built
        again for every attempt (a signature carries the time)."""

    @abstractmethod
    def split(self, response: httpx.Response, n: int) -> list[Any]:
        """A 200 answer to ``n`` images: one JSON entry per image (what the journal keeps), or
        an :class:`ImageError`. GarbledError where the body is not the API's shape."""

    @abstractmethod
    def decode(self, entry: Any) -> list[Label]:
        """An image's entry as labels, best first, at most ``max_results``, scores in [0, 1];
        GarbledError if it is not one."""

    @abstractmethod
    def failure(self, response: httpx.Response) -> Exception:
        """What a non-200 answer stands for: RetryableError, QuotaExhausted, RemoteAuthError
        or RemoteError (with the server's message), or a defence's refusal (QueryRejected,
        KeyBanned: :func:`refusal`)."""

    def probe_call(self) -> Call | None:
        """A call the API answers without billing (no image), or None where none is known."""
        return None

    def where(self) -> str:
        return f"{self.title} at {self.endpoint}"


def check_http_url(raw: str) -> httpx.URL:
    """``raw`` as an http(s) URL with a host that carries no key; UserInputError otherwise."""
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as e:
        raise UserInputError(f"endpoint {raw!r} is not a URL: {e}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise UserInputError(f"endpoint must be an http(s) URL, got {raw!r}")
    if any(p.lower() in ("key", "subscription-key", "api_key", "token") for p in url.params):
        raise UserInputError(
            "put the API key in api_key or BBATTACK_API_KEY, not in the endpoint URL "
            "(URLs end up in logs)"
        )
    return url


def json_body(response: httpx.Response) -> Any:
    """The JSON of a 200 answer; GarbledError (retried) if it is not JSON."""
    try:
        return json.loads(response.content)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both
        raise GarbledError("the body is not JSON (truncated?)") from None


def number(v: Any) -> float:
    """A JSON number (not a bool); GarbledError otherwise."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise GarbledError(f"expected a number, got {type(v).__name__}")
    return float(v)


def text_of(response: httpx.Response) -> str:
    """The answer's text, cut for an error message."""
    return response.text.strip()[:MAX_QUOTED] or response.reason_phrase


def generic_failure(
    schema: WireSchema, r: httpx.Response, message: str, *, quota: bool = False
) -> Exception:
    """The plain HTTP reading of a failure: 429 and 5xx are retried (after Retry-After),
    401/403 refuse the key, 402 or ``quota`` means the quota is spent, 413 is too large,
    anything else is refused with the server's ``message``."""
    what = f"HTTP {r.status_code} from {schema.where()}: {message[:MAX_QUOTED]}"
    if quota or r.status_code == 402:
        return QuotaExhausted(f"{what} (the key's quota is spent)")
    if r.status_code == 429 or r.status_code >= 500:
        return RetryableError(what, retry_after(r))
    if r.status_code in (401, 403):
        return RemoteAuthError(f"{what} (check the API key {schema.key_hint()})")
    if r.status_code == 413:
        return RemoteError(f"{what} (the image is too large for the API)")
    return RemoteError(what)


# A defence's refusals as ``bbattack serve`` names them in each schema's error form
# (QUERY_REJECTED, QueryRejectedException, query_rejected, ...; bbattack.service.app).
_REFUSALS: dict[str, type[QueryRejected]] = {
    "queryrejected": QueryRejected,
    "keybanned": KeyBanned,
}


def refusal(code: object, what: str) -> QueryRejected | None:
    """The refusal an error code names (any case, ``_`` or an ``Exception`` suffix aside),
    else None. Never retried: a plain attack stops on it (stop reason ``rejected`` or
    ``banned``), an adaptive one takes it as an answer and goes on."""
    if not isinstance(code, str):
        return None
    cls = _REFUSALS.get(re.sub("[^a-z]", "", code.lower()).removesuffix("exception"))
    if cls is None:
        return None
    return cls(f"{what[:MAX_QUOTED]} ({'the key is banned' if cls is KeyBanned else 'refused'})")


def sort_best_first(labels: list[Label], limit: int) -> list[Label]:
    """Highest score first (stable: the API's order among equals), at most ``limit``."""
    return sorted(labels, key=lambda lab: -lab.score)[:limit]


def flat_labels(
    items: list[Any], names: tuple[str, ...], score: str, missing: str, limit: int
) -> list[Label]:
    """Labels of a flat list of objects (Azure's tags, Clarifai's concepts, Hugging Face's
    items): the name under ``names[0]`` (later keys stand in for a missing or empty one), the
    score under ``score`` on a 0-1 scale, best first; GarbledError(``missing``) for an item
    without a name."""
    out: list[Label] = []
    for item in items:
        name = None
        if isinstance(item, dict):
            name = item.get(names[0])
            for key in names[1:]:
                name = name or item.get(key)
        if not isinstance(name, str):
            raise GarbledError(missing)
        out.append(Label(name, unit_score(item.get(score))))
    return sort_best_first(out, limit)


def unit_score(v: Any, scale: float = 1.0) -> float:
    """A score on the API's scale (1 or 100) as a number in [0, 1]; GarbledError otherwise."""
    s = number(v) / scale
    if not -1e-6 <= s <= 1.0 + 1e-6:  # rounding in the API's own arithmetic is tolerated
        raise GarbledError(f"a score {v!r} is outside [0, {scale:g}]")
    return min(max(s, 0.0), 1.0)
