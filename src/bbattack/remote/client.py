"""HttpLabelTarget: the client itself: caps, batching and concurrency, counters, journal."""

from __future__ import annotations

import json
import os
import random
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

from ..errors import UserInputError
from ..images import encode_png
from .answers import failure, probe
from .errors import QuotaExhausted, RemoteError, check_int, check_positive
from .journal import Journal, JournalEntry, cache_key
from .retry import GarbledError, RetryableError, RetryPolicy
from .schema import (
    API_KEY_ENV,
    MAX_IMAGES_PER_CALL,
    MAX_QUOTED,
    Labels,
    labels_of,
    parse_batch,
    request_body,
    resolve_endpoint,
)
from .spend import SpendCap

__all__ = ["HttpLabelTarget"]

FloatArray = NDArray[np.float32]


@dataclass(frozen=True)
class _Query:
    key: str
    index: int  # first position of this image in the annotate() call, for error messages
    png: bytes


def _redact(key: str) -> str:
    return key[: min(4, len(key) // 2)] + "…"


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
    from an RNG seeded with ``rng_seed``) or the server's Retry-After if that is longer; the
    three values make ``retry_policy``, a :class:`~bbattack.remote.retry.RetryPolicy`. Not
    retried: 429 with reason QUOTA_EXCEEDED (:class:`QuotaExhausted`); 401/403 and a 400 for an
    invalid key (:class:`RemoteAuthError`, a UserInputError); other 4xx such as 400 and 413
    (:class:`RemoteError`, with the server's message). An image answered with an error entry
    raises RemoteError naming its index, after the rest of its call is journalled. Running out
    of retries raises RemoteUnavailable. ``on_retry(message)`` is told of every retry (a progress
    line shows it). :meth:`probe` checks for free that the endpoint answers and takes the key.

    **Paid queries.** One per image that comes back labelled in a 200 answer (an error entry is
    not billed). Images found in the journal, and repeats within one call, are free:
    ``paid_queries + cached_queries`` is the number of images answered. A call the server
    billed but whose answer was lost (a timeout after the work was done) cannot be seen here.
    ``max_queries`` and ``max_cost`` (USD, ``price_per_1000`` per 1000 images; Google's list
    price for label detection is $1.50) cap this client's paid queries: an annotate() call
    whose new images would pass a cap raises :class:`SpendCapExceeded` and sends nothing.
    The three values make ``spend_cap``, a :class:`~bbattack.remote.spend.SpendCap`.

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
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.endpoint = resolve_endpoint(endpoint)
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        key = key.strip()
        if not key:
            raise UserInputError(f"no API key: pass api_key or set {API_KEY_ENV}")
        if not key.isascii() or not key.isprintable():
            raise UserInputError("the API key must be printable ASCII")
        check_int("max_results", max_results, 1, 1000)
        check_int("images_per_call", images_per_call, 1, MAX_IMAGES_PER_CALL)
        check_int("concurrency", concurrency, 1, 256)
        self.retry_policy = RetryPolicy(max_retries, backoff_base_s, backoff_max_s)
        check_positive("timeout_s", timeout_s)
        self.spend_cap = SpendCap(max_queries, max_cost, float(price_per_1000))
        if len(input_shape) != 3 or input_shape[0] not in (1, 3) or min(input_shape) < 1:
            raise UserInputError(f"input_shape must be (C, H, W) with C 1 or 3, got {input_shape}")

        self._key = key
        self.max_results = max_results
        self.images_per_call = images_per_call
        self.concurrency = concurrency
        self.timeout_s = float(timeout_s)
        c, h, w = (int(v) for v in input_shape)
        self.input_shape: tuple[int, int, int] = (c, h, w)
        self._sleep = sleep
        self._rng = random.Random(rng_seed)
        self._on_retry = on_retry

        self.paid_queries = 0
        self.cached_queries = 0
        self.http_calls = 0
        self.retries = 0
        self._reserved = 0  # new images of annotate() calls in progress, for the caps
        self._lock = threading.Lock()  # counters, reservations and the RNG
        self._closed = False

        self._journal = Journal(journal, self.endpoint)
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            headers={"X-Goog-Api-Key": key, "User-Agent": "bbattack"},
            follow_redirects=False,  # a redirect would carry the key to another host
        )
        self._pool: ThreadPoolExecutor | None = None

    # --- the policies' settings, and money ---------------------------------------------------

    @property
    def max_retries(self) -> int:
        return self.retry_policy.max_retries

    @property
    def backoff_base_s(self) -> float:
        return self.retry_policy.backoff_base_s

    @property
    def backoff_max_s(self) -> float:
        return self.retry_policy.backoff_max_s

    @property
    def max_queries(self) -> int | None:
        return self.spend_cap.max_queries

    @property
    def max_cost(self) -> float | None:
        return self.spend_cap.max_cost

    @property
    def price_per_1000(self) -> float:
        return self.spend_cap.price_per_1000

    @property
    def cost(self) -> float:
        """Dollars spent by this client: ``paid_queries * price_per_1000 / 1000``."""
        return self.spend_cap.cost(self.paid_queries)

    def estimate_cost(self, n_queries: int) -> float:
        """Dollars that ``n_queries`` paid images cost at ``price_per_1000``."""
        return self.spend_cap.cost(n_queries)

    @property
    def remaining_queries(self) -> int | None:
        """Paid images the caps still allow (None: no cap)."""
        return self.spend_cap.remaining(self.paid_queries)

    def describe_plan(self, n_queries: int) -> str:
        """A dry run: what ``n_queries`` more paid images would cost, and whether the caps
        allow them. Nothing is sent."""
        return self.spend_cap.describe_plan(self.paid_queries, n_queries)

    def _reserve(self, n: int) -> None:
        """Hold room under the caps for ``n`` new images, or raise SpendCapExceeded."""
        with self._lock:
            self.spend_cap.check(self.paid_queries, self._reserved, n)
            self._reserved += n

    # --- queries -----------------------------------------------------------------------------

    eight_bit = True  # images are sent as 8-bit PNGs: the query journal digests those bits
    billed = True  # each answer costs: the journal notes a call before it is sent

    def identity(self) -> str:
        """What answers, for the query journal: the endpoint and the labels asked per image."""
        return f"{self.endpoint}|max_results={self.max_results}"

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
                answers[k] = labels_of(json.loads(text))
            except (ValueError, GarbledError):
                raise RemoteError(f"journal row {k} does not hold a labelled response") from None
        todo: dict[str, _Query] = {}
        for i, (k, p) in enumerate(zip(keys, pngs, strict=True)):
            if k not in answers and k not in todo:
                todo[k] = _Query(k, i, p)

        self._reserve(len(todo))
        try:
            answers.update(self._fetch(list(todo.values())))
        except RemoteError as e:
            # Raised once every call in flight has come back: the count is what was billed.
            if isinstance(e, QuotaExhausted):
                e = QuotaExhausted(f"{e}; {self.spend_cap.spent(self.paid_queries)}")
            # The batch failed, but the calls it answered were billed: name their images.
            billed = self._journal.lookup(sorted(todo))
            e.billed_rows = tuple(i for i, k in enumerate(keys) if k in billed)
            raise e from None
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
        # The bytes sent are the bytes keyed: q.png, from the one encoder.
        content = request_body([q.png for q in batch], self.max_results)
        entries = self.retry_policy.run(
            lambda: self._attempt(content, len(batch)),
            what=self.endpoint,
            jitter=self._jitter,
            sleep=self._sleep,
            on_retry=self._count_retry,
        )
        good: dict[str, Labels] = {}
        rows: list[tuple[str, int, str]] = []
        errors: list[str] = []
        for q, e in zip(batch, entries, strict=True):
            if "error" in e:
                err = e["error"]
                errors.append(
                    f"image {q.index}: error {err.get('code', '?')}: "
                    f"{str(err.get('message', ''))[:MAX_QUOTED]}"
                )
            else:
                good[q.key] = labels_of(e)
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

    def _jitter(self) -> float:
        with self._lock:
            return self._rng.random()

    def _count_retry(self, n: int, delay: float, last: str) -> None:
        with self._lock:
            self.retries += 1
        if self._on_retry is not None:
            self._on_retry(f"retry {n}/{self.max_retries} in {delay:.1f} s: {last[:MAX_QUOTED]}")

    def _attempt(self, content: bytes, n: int) -> list[dict[str, Any]]:
        with self._lock:
            self.http_calls += 1
        try:
            r = self._client.post(
                self.endpoint, content=content, headers={"Content-Type": "application/json"}
            )
        except httpx.TimeoutException as e:
            raise RetryableError(f"timed out ({type(e).__name__})") from None
        except (httpx.TransportError, httpx.DecodingError) as e:
            raise RetryableError(f"{type(e).__name__}: {e}") from None
        if r.status_code == 200:
            try:
                return parse_batch(r, n)
            except GarbledError as e:
                raise RetryableError(f"200 with a bad body: {e}") from None
        raise failure(r, self.endpoint, _redact(self._key))

    def probe(self) -> str:
        """Check, for free, that the endpoint answers and takes the key: one call with no
        image. Returns a one-line description; raises RemoteAuthError (the key is refused),
        RemoteUnavailable (nothing answers) or RemoteError (not an images:annotate endpoint)."""
        with self._lock:
            self.http_calls += 1
        return probe(self._client, self.endpoint, _redact(self._key))

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
