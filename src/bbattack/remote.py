"""A remote label API (Google Cloud Vision ``images:annotate``, or bbattack's own label
service) as an attack target, with retries, a spend cap and a query journal.

>>> target = HttpLabelTarget("https://vision.googleapis.com/v1/images:annotate",
...                          journal="attack.sqlite", max_cost=20.0)     # doctest: +SKIP
>>> print(target.describe_plan(11_234))                                  # doctest: +SKIP
expected 11,234 queries ≈ $16.85 at $1.50/1000
>>> oracle_target = LabelTarget(target)                                  # doctest: +SKIP

The endpoint and the key may come from the environment: ``BBATTACK_ENDPOINT`` (the full
``…/v1/images:annotate`` URL, or just the server's base URL) and ``BBATTACK_API_KEY``.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import io
import json
import math
import os
import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import httpx
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from .errors import OracleError, UserInputError
from .images import to_uint8

__all__ = [
    "ANNOTATE_PATH",
    "GOOGLE_VISION_ENDPOINT",
    "HttpLabelTarget",
    "JournalEntry",
    "QuotaExhausted",
    "RemoteAuthError",
    "RemoteError",
    "SpendCapExceeded",
]

FloatArray = NDArray[np.float32]
Labels = list[tuple[str, float]]

GOOGLE_VISION_ENDPOINT = "https://vision.googleapis.com/v1/images:annotate"
ANNOTATE_PATH = "/v1/images:annotate"
ENDPOINT_ENV = "BBATTACK_ENDPOINT"
API_KEY_ENV = "BBATTACK_API_KEY"
# Cloud Vision takes at most 16 images per synchronous call.
MAX_IMAGES_PER_CALL = 16
JOURNAL_VERSION = 1
# Server error text quoted in exceptions is cut here: an HTML error page is not a message.
_MAX_QUOTED = 300


class RemoteError(OracleError):
    """The label API refused a call, answered an image with an error, or kept failing."""


class RemoteAuthError(RemoteError, UserInputError):
    """The API key is missing, invalid or not allowed to use the API: the user can fix it."""


class QuotaExhausted(RemoteError):  # noqa: N818 - reads as a state, like BudgetExhausted
    """The key's quota is spent (429 with reason QUOTA_EXCEEDED): retrying will not help."""


class SpendCapExceeded(OracleError):  # noqa: N818 - a state, like BudgetExhausted
    """A call would pass ``max_queries`` or ``max_cost``; nothing was sent."""


@dataclass(frozen=True)
class JournalEntry:
    """One row of the journal: the answer to one distinct (image, max_results) query."""

    key: str
    max_results: int
    response: dict[str, Any]
    created: float
    paid: bool
    hits: int
    endpoint: str

    @property
    def labels(self) -> Labels:
        """(description, score) pairs, as :meth:`HttpLabelTarget.annotate` returns them."""
        return _labels_of(self.response)


class _GarbledError(Exception):
    """A 200 answer whose body is not JSON of the expected shape (for one: truncated)."""


class _RetryableError(Exception):
    """One failed attempt that is worth another: what happened and what the server asked."""

    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.retry_after = retry_after


@dataclass(frozen=True)
class _Query:
    key: str
    index: int  # first position of this image in the annotate() call, for error messages
    png: bytes


def cache_key(png: bytes, max_results: int) -> str:
    """The journal key: sha256 hex of the PNG bytes followed by ``|max_results=<n>``."""
    return hashlib.sha256(png + b"|max_results=%d" % max_results).hexdigest()


def encode_png(image: NDArray[np.floating]) -> bytes:
    """A CHW image in [0, 1] as 8-bit PNG bytes; equal arrays give equal bytes."""
    chw = to_uint8(image)
    img = Image.fromarray(chw[0]) if chw.shape[0] == 1 else Image.fromarray(chw.transpose(1, 2, 0))
    buf = io.BytesIO()
    # Fixed settings and no metadata: the bytes are the journal's key.
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _usd(v: float) -> str:
    return f"${v:,.2f}" if v >= 1 or v == 0 else f"${v:.4f}"


def _redact(key: str) -> str:
    return key[: min(4, len(key) // 2)] + "…"


def _labels_of(entry: Any) -> Labels:
    """(description, score) pairs of one successful per-image response; _GarbledError if it is not
    one (proto3 JSON leaves an empty label list out, so a missing list means no labels)."""
    if not isinstance(entry, dict) or "error" in entry:
        raise _GarbledError("not a labelled image response")
    anns = entry.get("labelAnnotations", [])
    if not isinstance(anns, list):
        raise _GarbledError("labelAnnotations is not a list")
    out: Labels = []
    for a in anns:
        if not isinstance(a, dict):
            raise _GarbledError("a label annotation is not an object")
        desc, score = a.get("description"), a.get("score")
        if (
            not isinstance(desc, str)
            or isinstance(score, bool)
            or not isinstance(score, int | float)
        ):
            raise _GarbledError("a label annotation lacks description or score")
        out.append((desc, float(score)))
    return out


def _parse_batch(response: httpx.Response, n: int) -> list[dict[str, Any]]:
    """The per-image entries of a 200 answer to ``n`` images, checked; _GarbledError otherwise."""
    try:
        data = json.loads(response.content)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both
        raise _GarbledError("the body is not JSON (truncated?)") from None
    entries = data.get("responses") if isinstance(data, dict) else None
    if not isinstance(entries, list) or len(entries) != n:
        raise _GarbledError(f"the body does not hold {n} responses")
    for e in entries:
        if not isinstance(e, dict):
            raise _GarbledError("a response is not an object")
        if "error" in e:
            if not isinstance(e["error"], dict):
                raise _GarbledError("an error entry is not an object")
        else:
            _labels_of(e)
    return entries


def _error_of(response: httpx.Response) -> tuple[str, str | None]:
    """The message and the ErrorInfo reason of a Google-style error body (or the raw text)."""
    try:
        err = response.json()["error"]
        message = str(err.get("message", "")) or response.reason_phrase
        reason = None
        for d in err.get("details", []) or []:
            if isinstance(d, dict) and isinstance(d.get("reason"), str):
                reason = d["reason"]
                break
        return message[:_MAX_QUOTED], reason
    except (ValueError, KeyError, TypeError, AttributeError):
        text = response.text.strip()[:_MAX_QUOTED]
        return text or response.reason_phrase, None


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds: a number, or an HTTP date; None if absent or unreadable."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


class _Journal:
    """The SQLite store behind the cache and the audit log (see HttpLabelTarget)."""

    def __init__(self, path: str | os.PathLike[str] | None, endpoint: str) -> None:
        self.endpoint = endpoint
        self.path = None if path is None else os.fspath(path)
        self._lock = threading.Lock()
        try:
            # One connection shared by the worker threads, serialised by the lock.
            self._conn = sqlite3.connect(
                ":memory:" if self.path is None else self.path,
                check_same_thread=False,
                timeout=30.0,
            )
            if self.path is not None:
                # WAL: readers (another process inspecting the log) never block the writer.
                self._conn.execute("PRAGMA journal_mode=WAL")
                # A paid answer must survive a power cut once annotate() has returned it.
                self._conn.execute("PRAGMA synchronous=FULL")
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            if version not in (0, JOURNAL_VERSION):
                raise UserInputError(
                    f"journal {self.path}: format version {version}, this bbattack reads "
                    f"{JOURNAL_VERSION}"
                )
            with self._conn:
                self._conn.execute(
                    "CREATE TABLE IF NOT EXISTS queries ("
                    " key TEXT PRIMARY KEY,"
                    " max_results INTEGER NOT NULL,"
                    " response TEXT NOT NULL,"
                    " created REAL NOT NULL,"
                    " paid INTEGER NOT NULL,"
                    " hits INTEGER NOT NULL DEFAULT 0,"
                    " endpoint TEXT NOT NULL)"
                )
                self._conn.execute(f"PRAGMA user_version={JOURNAL_VERSION}")
        except sqlite3.Error as e:
            raise UserInputError(f"cannot open the journal {self.path}: {e}") from None

    def lookup(self, keys: list[str]) -> dict[str, str]:
        """key -> stored response JSON, for the keys that are in the journal."""
        found: dict[str, str] = {}
        with self._lock:
            for i in range(0, len(keys), 500):  # SQLite caps the number of parameters
                chunk = keys[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT key, response FROM queries WHERE key IN ({marks})", chunk
                )
                found.update((str(k), str(r)) for k, r in rows)
        return found

    def record(self, rows: list[tuple[str, int, str]]) -> None:
        """Store paid answers (key, max_results, response JSON) and commit."""
        now = time.time()
        with self._lock, self._conn:
            # OR IGNORE: another client on the same file may have stored it meanwhile.
            self._conn.executemany(
                "INSERT OR IGNORE INTO queries (key, max_results, response, created, paid, "
                "hits, endpoint) VALUES (?, ?, ?, ?, 1, 0, ?)",
                [(k, m, r, now, self.endpoint) for k, m, r in rows],
            )

    def count_hits(self, hits: Counter[str]) -> None:
        if hits:
            with self._lock, self._conn:
                self._conn.executemany(
                    "UPDATE queries SET hits = hits + ? WHERE key = ?",
                    [(n, k) for k, n in hits.items()],
                )

    def entries(self) -> list[JournalEntry]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT key, max_results, response, created, paid, hits, endpoint "
                "FROM queries ORDER BY created, rowid"
            ).fetchall()
        return [
            JournalEntry(
                key=str(k),
                max_results=int(m),
                response=json.loads(r),
                created=float(c),
                paid=bool(p),
                hits=int(h),
                endpoint=str(e),
            )
            for k, m, r, c, p, h, e in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class HttpLabelTarget:
    """A Cloud-Vision-style label API (``POST …/v1/images:annotate``, LABEL_DETECTION) as an
    attack target: a :class:`bbattack.targets.LabelSource`, so ``LabelTarget(HttpLabelTarget(
    …))`` puts it behind the oracle.

    **Requests.** Images (N, C, H, W) in [0, 1] are sent as 8-bit PNG (rounded, deterministic
    bytes), base64, ``images_per_call`` per call, up to ``concurrency`` calls in flight. The
    key goes in the ``X-Goog-Api-Key`` header, never in the URL, so it never lands in logs.
    ``endpoint`` defaults to ``$BBATTACK_ENDPOINT`` (a base URL gets ``/v1/images:annotate``
    appended) and ``api_key`` to ``$BBATTACK_API_KEY``.

    **Retry policy.** 429 (rate limit), 5xx, timeouts, connection errors and 200 answers whose
    body is not JSON of the expected shape (truncated) are retried up to ``max_retries``
    times, sleeping ``min(backoff_max_s, backoff_base_s * 2**attempt) * U[0, 1]`` (full jitter,
    from an RNG seeded with ``rng_seed``) or the server's Retry-After if that is longer. Not
    retried: 429 with reason QUOTA_EXCEEDED (:class:`QuotaExhausted`); 401/403 and a 400 for an
    invalid key (:class:`RemoteAuthError`, a UserInputError); other 4xx such as 400 and 413
    (:class:`RemoteError`, with the server's message). An image answered with an error entry
    raises RemoteError naming its index, after the rest of its call is journalled. Running out
    of retries raises RemoteError.

    **Paid queries.** One per image that comes back labelled in a 200 answer (an error entry is
    not billed). Images found in the journal, and repeats within one call, are free:
    ``paid_queries + cached_queries`` is the number of images answered. A call the server
    billed but whose answer was lost (a timeout after the work was done) cannot be seen here.
    ``max_queries`` and ``max_cost`` (USD, ``price_per_1000`` per 1000 images; Google's list
    price for label detection is $1.50) cap this client's paid queries: an annotate() call
    whose new images would pass a cap raises :class:`SpendCapExceeded` and sends nothing.

    **Counters.** ``paid_queries``, ``cached_queries``, ``cost`` (dollars), ``http_calls``
    (every request sent, retries included) and ``retries``; ``remaining_queries`` under the
    caps. They are this client's, from zero: a reopened journal's old rows are not counted.

    **Journal.** Every paid answer is committed to the journal before annotate() returns it,
    and a repeated query (same PNG bytes, same max_results) is answered from it without a
    call. ``journal`` is an SQLite file (WAL mode), reusable across runs; without one an
    in-memory database dedupes within the process. Table ``queries``: ``key`` (primary key,
    sha256 hex of the PNG bytes followed by ``|max_results=<n>``), ``max_results``,
    ``response`` (the image's entry of ``responses`` as the server sent it, as JSON),
    ``created`` (Unix time), ``paid`` (1: it was billed), ``hits`` (times it answered a repeat
    for free), ``endpoint`` (the URL, no key). :meth:`journal_entries` reads it.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        api_key: str | None = None,
        *,
        max_results: int = 10,
        images_per_call: int = MAX_IMAGES_PER_CALL,
        concurrency: int = 4,
        timeout_s: float = 30.0,
        max_retries: int = 8,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_queries: int | None = None,
        max_cost: float | None = None,
        price_per_1000: float = 1.50,
        journal: str | os.PathLike[str] | None = None,
        input_shape: tuple[int, int, int] = (3, 224, 224),
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng_seed: int | None = None,
    ) -> None:
        self.endpoint = _resolve_endpoint(endpoint)
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        key = key.strip()
        if not key:
            raise UserInputError(f"no API key: pass api_key or set {API_KEY_ENV}")
        if not key.isascii() or not key.isprintable():
            raise UserInputError("the API key must be printable ASCII")
        _check_int("max_results", max_results, 1, 1000)
        _check_int("images_per_call", images_per_call, 1, MAX_IMAGES_PER_CALL)
        _check_int("concurrency", concurrency, 1, 256)
        _check_int("max_retries", max_retries, 0, 1000)
        for name, v in (
            ("timeout_s", timeout_s),
            ("backoff_max_s", backoff_max_s),
            ("price_per_1000", price_per_1000),
        ):
            if not (v > 0 and math.isfinite(v)):
                raise UserInputError(f"{name} must be a positive number, got {v}")
        if not (backoff_base_s >= 0 and math.isfinite(backoff_base_s)):
            raise UserInputError(f"backoff_base_s must be >= 0, got {backoff_base_s}")
        if max_queries is not None:
            _check_int("max_queries", max_queries, 0, None)
        if max_cost is not None and not (max_cost >= 0 and math.isfinite(max_cost)):
            raise UserInputError(f"max_cost must be >= 0 dollars, got {max_cost}")
        if len(input_shape) != 3 or input_shape[0] not in (1, 3) or min(input_shape) < 1:
            raise UserInputError(f"input_shape must be (C, H, W) with C 1 or 3, got {input_shape}")

        self._key = key
        self.max_results = max_results
        self.images_per_call = images_per_call
        self.concurrency = concurrency
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self.max_queries = max_queries
        self.max_cost = max_cost
        self.price_per_1000 = float(price_per_1000)
        c, h, w = (int(v) for v in input_shape)
        self.input_shape: tuple[int, int, int] = (c, h, w)
        self._sleep = sleep
        self._rng = random.Random(rng_seed)

        self.paid_queries = 0
        self.cached_queries = 0
        self.http_calls = 0
        self.retries = 0
        self._reserved = 0  # new images of annotate() calls in progress, for the caps
        self._lock = threading.Lock()  # counters, reservations and the RNG
        self._closed = False

        self._journal = _Journal(journal, self.endpoint)
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            headers={"X-Goog-Api-Key": key, "User-Agent": "bbattack"},
            follow_redirects=False,  # a redirect would carry the key to another host
        )
        self._pool: ThreadPoolExecutor | None = None

    # --- money -------------------------------------------------------------------------------

    @property
    def cost(self) -> float:
        """Dollars spent by this client: ``paid_queries * price_per_1000 / 1000``."""
        return self.estimate_cost(self.paid_queries)

    def estimate_cost(self, n_queries: int) -> float:
        """Dollars that ``n_queries`` paid images cost at ``price_per_1000``."""
        return n_queries * self.price_per_1000 / 1000.0

    @property
    def remaining_queries(self) -> int | None:
        """Paid images the caps still allow (None: no cap)."""
        room = [
            cap - self.paid_queries
            for cap in (self.max_queries, self._cost_cap_queries())
            if cap is not None
        ]
        return max(0, min(room)) if room else None

    def _cost_cap_queries(self) -> int | None:
        """The most paid images ``max_cost`` allows."""
        if self.max_cost is None:
            return None
        # The epsilon lets an exact budget ($0.015 = 10 images at $1.50) be used up.
        return math.floor(self.max_cost * 1000.0 / self.price_per_1000 + 1e-9)

    def describe_plan(self, n_queries: int) -> str:
        """A dry run: what ``n_queries`` more paid images would cost, and whether the caps
        allow them. Nothing is sent."""
        if n_queries < 0:
            raise UserInputError(f"n_queries must be >= 0, got {n_queries}")
        text = (
            f"expected {n_queries:,} queries ≈ {_usd(self.estimate_cost(n_queries))} "
            f"at ${self.price_per_1000:.2f}/1000"
        )
        if self.paid_queries:
            text += f"; {self.paid_queries:,} already paid ({_usd(self.cost)})"
        room = self.remaining_queries
        if room is not None and n_queries > room:
            text += f"; the spend cap stops it after {room:,} more"
        return text

    def _spent(self) -> str:
        return (
            f"spent so far: {self.paid_queries:,} paid queries ({_usd(self.cost)} at "
            f"${self.price_per_1000:.2f}/1000)"
        )

    def _reserve(self, n: int) -> None:
        """Hold room under the caps for ``n`` new images, or raise SpendCapExceeded."""
        with self._lock:
            total = self.paid_queries + self._reserved + n
            if self.max_queries is not None and total > self.max_queries:
                raise SpendCapExceeded(
                    f"spend cap: this call needs {n:,} paid queries, which would make "
                    f"{total:,} > max_queries={self.max_queries:,}; nothing was sent; "
                    + self._spent()
                )
            cost_cap = self._cost_cap_queries()
            if self.max_cost is not None and cost_cap is not None and total > cost_cap:
                raise SpendCapExceeded(
                    f"spend cap: this call needs {n:,} paid queries, which would make "
                    f"{_usd(self.estimate_cost(total))} > max_cost={_usd(self.max_cost)}; "
                    "nothing was sent; " + self._spent()
                )
            self._reserved += n

    # --- queries -----------------------------------------------------------------------------

    def annotate(self, x: FloatArray) -> list[list[tuple[str, float]]]:
        """Labels for each image of ``x`` (N, C, H, W) in [0, 1]: (description, score) pairs in
        the order the API returned them (best first), one list per image, in input order."""
        if self._closed:
            raise RemoteError("this HttpLabelTarget is closed")
        arr = np.asarray(x)
        if arr.ndim != 4 or arr.shape[1] not in (1, 3) or min(arr.shape[2:], default=0) < 1:
            raise UserInputError(f"images must be (N, C, H, W) with C 1 or 3, got {arr.shape}")
        if len(arr) == 0:
            return []
        if not np.issubdtype(arr.dtype, np.floating):
            raise UserInputError(f"images must be floats in [0, 1], got dtype {arr.dtype}")
        if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0:
            raise UserInputError("images must be finite and within [0, 1]")

        pngs = [encode_png(img) for img in arr]
        keys = [cache_key(p, self.max_results) for p in pngs]
        answers: dict[str, Labels] = {}
        for k, text in self._journal.lookup(sorted(set(keys))).items():
            try:
                answers[k] = _labels_of(json.loads(text))
            except (ValueError, _GarbledError):
                raise RemoteError(f"journal row {k} does not hold a labelled response") from None
        todo: dict[str, _Query] = {}
        for i, (k, p) in enumerate(zip(keys, pngs, strict=True)):
            if k not in answers and k not in todo:
                todo[k] = _Query(k, i, p)

        self._reserve(len(todo))
        try:
            answers.update(self._fetch(list(todo.values())))
        finally:
            with self._lock:
                self._reserved -= len(todo)

        hits = Counter(keys)
        for k in todo:
            hits[k] -= 1
        hits = +hits  # drop the zeros: images that were paid once and not repeated
        with self._lock:
            self.cached_queries += hits.total()
        self._journal.count_hits(hits)
        return [list(answers[k]) for k in keys]

    def _fetch(self, queries: list[_Query]) -> dict[str, Labels]:
        """Send the queries in batches, ``concurrency`` at a time; raise the first failure once
        every batch already in flight has finished (and been journalled)."""
        batches = [
            queries[i : i + self.images_per_call]
            for i in range(0, len(queries), self.images_per_call)
        ]
        out: dict[str, Labels] = {}
        if len(batches) <= 1 or self.concurrency == 1:
            for b in batches:
                out.update(self._run_batch(b))
            return out
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.concurrency, "bbattack-remote")
        futures = [self._pool.submit(self._run_batch, b) for b in batches]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None), None)
        if failed is not None:
            # Stop spending: batches not started yet are dropped, running ones complete.
            for f in pending:
                f.cancel()
            wait(pending)
            raise _first_error(futures)
        for f in futures:
            out.update(f.result())
        return out

    def _run_batch(self, batch: list[_Query]) -> dict[str, Labels]:
        body = {
            "requests": [
                {
                    "image": {"content": base64.b64encode(q.png).decode("ascii")},
                    "features": [{"type": "LABEL_DETECTION", "maxResults": self.max_results}],
                }
                for q in batch
            ]
        }
        entries = self._post(json.dumps(body).encode("utf-8"), len(batch))
        good: dict[str, Labels] = {}
        rows: list[tuple[str, int, str]] = []
        errors: list[str] = []
        for q, e in zip(batch, entries, strict=True):
            if "error" in e:
                err = e["error"]
                errors.append(
                    f"image {q.index}: error {err.get('code', '?')}: "
                    f"{str(err.get('message', ''))[:_MAX_QUOTED]}"
                )
            else:
                good[q.key] = _labels_of(e)
                rows.append(
                    (q.key, self.max_results, json.dumps(e, separators=(",", ":"), sort_keys=True))
                )
        with self._lock:
            self.paid_queries += len(rows)
        # Journalled before anything is returned or raised: a paid answer is never lost.
        self._journal.record(rows)
        if errors:
            raise RemoteError(
                "the API answered an image with an error: "
                + "; ".join(errors)
                + f" ({len(rows)} other image(s) of that call were journalled)"
            )
        return good

    def _post(self, content: bytes, n: int) -> list[dict[str, Any]]:
        """One call, retried per the policy; the checked per-image entries of the answer."""
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            try:
                return self._attempt(content, n)
            except _RetryableError as e:
                last = str(e)
                if attempt == self.max_retries:
                    break
                delay = self._backoff(attempt, e.retry_after)
                with self._lock:
                    self.retries += 1
                self._sleep(delay)
        raise RemoteError(
            f"{self.endpoint} kept failing: gave up after {self.max_retries} retries; last: {last}"
        )

    def _attempt(self, content: bytes, n: int) -> list[dict[str, Any]]:
        with self._lock:
            self.http_calls += 1
        try:
            r = self._client.post(
                self.endpoint, content=content, headers={"Content-Type": "application/json"}
            )
        except httpx.TimeoutException as e:
            raise _RetryableError(f"timed out ({type(e).__name__})") from None
        except (httpx.TransportError, httpx.DecodingError) as e:
            raise _RetryableError(f"{type(e).__name__}: {e}") from None
        if r.status_code == 200:
            try:
                return _parse_batch(r, n)
            except _GarbledError as e:
                raise _RetryableError(f"200 with a bad body: {e}") from None
        message, reason = _error_of(r)
        what = f"HTTP {r.status_code} from {self.endpoint}: {message}"
        if r.status_code == 429:
            if reason == "QUOTA_EXCEEDED":
                raise QuotaExhausted(f"{what} (the key's quota is spent); " + self._spent())
            raise _RetryableError(what, _retry_after(r))
        if r.status_code >= 500:
            raise _RetryableError(what, _retry_after(r))
        if r.status_code in (401, 403) or (reason or "").startswith("API_KEY"):
            raise RemoteAuthError(f"{what} (check the API key {_redact(self._key)})")
        if r.status_code == 413:
            raise RemoteError(f"{what} (try a smaller images_per_call)")
        raise RemoteError(what)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter, capped; never shorter than the server's Retry-After."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** min(attempt, 64))
        with self._lock:
            delay = ceiling * self._rng.random()
        return delay if retry_after is None else max(delay, retry_after)

    # --- journal and lifetime ----------------------------------------------------------------

    def journal_entries(self) -> Iterator[JournalEntry]:
        """The journal's rows, oldest first."""
        yield from self._journal.entries()

    def close(self) -> None:
        """Wait for calls in flight, then close the connections and the journal."""
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()
        self._journal.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"HttpLabelTarget({self.endpoint!r}, key={_redact(self._key)!r}, "
            f"paid_queries={self.paid_queries}, cost={self.cost:.4f})"
        )


def _first_error(futures: list[Future[dict[str, Labels]]]) -> BaseException:
    """The error of the earliest failed batch (in batch order, so messages are stable)."""
    for f in futures:
        if not f.cancelled():
            e = f.exception()
            if e is not None:
                return e
    raise AssertionError("no batch failed")  # pragma: no cover - only called after a failure


def _check_int(name: str, v: int, lo: int, hi: int | None) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise UserInputError(f"{name} must be an integer {bound}, got {v!r}")


def _resolve_endpoint(endpoint: str | None) -> str:
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
