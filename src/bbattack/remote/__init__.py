"""A remote label API (Google Cloud Vision, AWS Rekognition, Azure AI Vision, Clarifai, a
Hugging Face model, any JSON API, or bbattack's own label service) as an attack target, with
retries and a spend cap. One :class:`HttpLabelTarget` over a wire schema
(:mod:`.wire`, one file per API in :mod:`.schemas`; prices in :mod:`.prices`).

>>> target = HttpLabelTarget("https://vision.googleapis.com/v1/images:annotate",
...                          max_cost=20.0)                              # doctest: +SKIP
>>> print(target.describe_plan(11_234))                                  # doctest: +SKIP
expected 11,234 queries ≈ $16.85 at $1.50/1000
>>> oracle = Oracle(LabelTarget(target), TopK(5), journal="attack.sqlite")  # doctest: +SKIP

The query journal of a run is the oracle's (:mod:`bbattack.oracle.journal`): every query,
paid or answered from the journal, in order, for resume and replay. The client's own
``journal=`` (:mod:`.journal`, format 1) is a content-keyed cache of raw answers for direct
users of :meth:`HttpLabelTarget.annotate`; the command line keeps it in memory.

The endpoint and the key may come from the environment: ``BBATTACK_ENDPOINT`` (the full
``…/v1/images:annotate`` URL, or just the server's base URL) and ``BBATTACK_API_KEY``.

Modules: :mod:`.client` (HttpLabelTarget), :mod:`.errors`, :mod:`.retry` (RetryPolicy),
:mod:`.spend` (SpendCap), :mod:`.schema` (the wire format) and :mod:`.journal` (the client's
answer cache). The PNG bytes that are sent and keyed come from :func:`bbattack.images.encode_png`,
re-exported here.
"""

from ..images import encode_png
from .client import HttpLabelTarget
from .errors import (
    QuotaExhausted,
    RemoteAuthError,
    RemoteError,
    RemoteUnavailable,
    SpendCapExceeded,
)
from .journal import JOURNAL_VERSION, JournalEntry, cache_key
from .prices import PRICES, PRICES_READ, Price
from .retry import RetryPolicy
from .schema import ANNOTATE_PATH, GOOGLE_VISION_ENDPOINT, MAX_IMAGES_PER_CALL
from .schemas import SCHEMAS, make_schema
from .spend import SpendCap
from .wire import Label, WireSchema

__all__ = [
    "ANNOTATE_PATH",
    "GOOGLE_VISION_ENDPOINT",
    "JOURNAL_VERSION",
    "MAX_IMAGES_PER_CALL",
    "PRICES",
    "PRICES_READ",
    "SCHEMAS",
    "HttpLabelTarget",
    "JournalEntry",
    "Label",
    "Price",
    "QuotaExhausted",
    "RemoteAuthError",
    "RemoteError",
    "RemoteUnavailable",
    "RetryPolicy",
    "SpendCap",
    "SpendCapExceeded",
    "WireSchema",
    "cache_key",
    "encode_png",
    "make_schema",
]
