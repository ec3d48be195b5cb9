"""HttpLabelTarget: the client itself: caps, batching and concurrency, counters, journal."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from types import TracebackType
from typing import Any, Self

import httpx
import numpy as np
from numpy.typing import NDArray

from ..errors import QueryRejected, UserInputError
from ..images import encode_png
from ._queries import Query, checked_images, first_error, to_send
from .answers import probe
from .errors import QuotaExhausted, RemoteError, check_int, check_positive
from .journal import Journal, JournalEntry, cache_key
from .retry import GarbledError, RetryableError, RetryPolicy
from .schema import Labels, raw_endpoint, raw_key
from .schemas import make_schema
from .settings import Settings
from .spend import SpendCap
from .wire import MAX_QUOTED, ImageError, WireSchema

__all__ = ["HttpLabelTarget"]

FloatArray = NDArray[np.float32]


class HttpLabelTarget(Settings):
    """A label API as an attack target: a :class:`bbattack.targets.LabelSource`, so
    ``LabelTarget(HttpLabelTarget(…))`` puts it behind the oracle.

    **Wire schemas.** ``schema`` names the API's format (:mod:`bbattack.remote.schemas`):
    ``gcv`` (Google Cloud Vision ``images:annotate``, the default), ``rekognition``,
    ``azure``, ``clarifai``, ``hf`` (Hugging Face) or ``json`` (any JSON API, described by
    ``schema_options``: ``labels_path``, ``scores_path``, ``request_template``, ``auth``,
    ``score_scale``). The schema builds requests, authenticates, decodes answers (scores on a
    0-1 scale; :meth:`ancestors` gives the ancestors an API names) and reads the API's error
    and quota signals; everything below is shared by every schema.

    **Requests.** Images (N, C, H, W) in [0, 1] are sent as 8-bit PNG (rounded, deterministic
    bytes), ``images_per_call`` per call (default and most: the API's limit), up to
    ``concurrency`` calls in flight. The key goes in a header (or a signature), never in the
    URL, so it never lands in logs. ``endpoint`` defaults to ``$BBATTACK_ENDPOINT`` (a
    schema completes a base URL with its path) and ``api_key`` to ``$BBATTACK_API_KEY``.

    **Retry policy.** 429 (rate limit), 5xx, timeouts, connection errors and 200 answers whose
    body is not JSON of the expected shape (truncated) are retried up to ``max_retries``
    times, sleeping ``min(backoff_max_s, backoff_base_s * 2**attempt) * U[0, 1]`` (full jitter,
    from an RNG seeded with ``rng_seed``) or the server's Retry-After if that is longer; the
    three values make ``retry_policy``, a :class:`~bbattack.remote.retry.RetryPolicy`. Not
    retried: 429 with reason QUOTA_EXCEEDED (:class:`QuotaExhausted`); 401/403 and a 400 for an
    invalid key (:class:`RemoteAuthError`, a UserInputError); other 4xx such as 400 and 413
    (:class:`RemoteError`, with the server's message); other schemas map their API's signals
    alike (Rekognition's ThrottlingException, Clarifai's 11005, ...). A defence's refusal of a
    call (``bbattack serve --defense``; each schema's form, :func:`.wire.refusal`) raises
    QueryRejected or KeyBanned, not retried; its images are billed. An image answered with
    an error entry raises RemoteError naming its index, after the rest of its call is
    journalled. Running out of retries raises RemoteUnavailable. ``on_retry(message)`` is told
    of every retry. :meth:`probe` checks for free that the endpoint answers and takes the key.

    **Paid queries.** One per image that comes back labelled in a 200 answer (an error entry is
    not billed), and one per image of a call a defence refused (billed, not answered). Images
    found in the journal, and repeats within one call, are free: ``paid_queries +
    cached_queries`` is the number of images answered or refused. A call the server
    billed but whose answer was lost (a timeout after the work was done) cannot be seen here.
    ``max_queries`` and ``max_cost`` (USD, ``price_per_1000`` per 1000 images; Google's list
    price for label detection is $1.50) cap this client's paid queries: an annotate() call
    whose new images would pass a cap raises :class:`SpendCapExceeded` and sends nothing.
    ``price_per_1000`` defaults to the schema's list price (:mod:`.prices`; None for an API
    not priced per image). The three values make ``spend_cap``, a
    :class:`~bbattack.remote.spend.SpendCap`.

    **Counters.** ``paid_queries``, ``cached_queries``, ``cost`` (dollars), ``http_calls``
    (every request sent, retries included) and ``retries``; ``remaining_queries`` under the
    caps. They are this client's, from zero: a reopened journal's old rows are not counted.

    **Journal.** Every paid answer is committed to the journal before annotate() returns it,
    and a repeated query (same PNG bytes, max_results and schema) is answered from it without
    a call. ``journal`` is an SQLite file (WAL mode, its table in :mod:`.journal`), reusable
    across runs; without one an in-memory database dedupes within the process.
    :meth:`journal_entries` reads it.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        api_key: str | None = None,
        schema: str = "gcv",
        *,
        schema_options: Mapping[str, Any] | None = None,
        max_results: int = 10,
        images_per_call: int | None = None,
        concurrency: int = 4,
        timeout_s: float = 30.0,
        max_retries: int = 8,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_queries: int | None = None,
        max_cost: float | None = None,
        price_per_1000: float | None = None,
        journal: str | os.PathLike[str] | None = None,
        input_shape: tuple[int, int, int] = (3, 224, 224),
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng_seed: int | None = None,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        raw = raw_endpoint(endpoint)
        key = raw_key(api_key)
        check_int("max_results", max_results, 1, 1000)
        self.schema: WireSchema = make_schema(
            schema, raw, key, max_results, dict(schema_options or {})
        )
        self.endpoint = self.schema.endpoint
        most = self.schema.max_images_per_call
        images_per_call = most if images_per_call is None else images_per_call
        check_int("images_per_call", images_per_call, 1, most)
        check_int("concurrency", concurrency, 1, 256)
        self.retry_policy = RetryPolicy(max_retries, backoff_base_s, backoff_max_s)
        check_positive("timeout_s", timeout_s)
        price = self.schema.price.per_1000 if price_per_1000 is None else float(price_per_1000)
        self.spend_cap = SpendCap(max_queries, max_cost, price)
        if len(input_shape) != 3 or input_shape[0] not in (1, 3) or min(input_shape) < 1:
            raise UserInputError(f"input_shape must be (C, H, W) with C 1 or 3, got {input_shape}")

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
        self._parents: dict[str, tuple[str, ...]] = {}  # label -> ancestors the API named

        self._journal = Journal(journal, self.endpoint, self.schema.tag)
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            headers={"User-Agent": "bbattack"},
            follow_redirects=False,  # a redirect would carry the key to another host
        )
        self._pool: ThreadPoolExecutor | None = None

    # --- queries -----------------------------------------------------------------------------

    eight_bit = True  # images are sent as 8-bit PNGs: the query journal digests those bits
    billed = True  # each answer costs: the journal notes a call before it is sent

    def identity(self) -> str:
        """What answers, for the query journal: the endpoint, the labels asked per image and
        (but for Google's, whose identities predate schemas) the wire schema."""
        tail = "" if self.schema.name == "gcv" else f"|schema={self.schema.tag}"
        return f"{self.endpoint}|max_results={self.max_results}{tail}"

    def ancestors(self, label: str) -> tuple[str, ...]:
        """The ancestors the API named for ``label`` in any answer so far (Rekognition's
        ``Parents``), nearest first; () for a flat API or a label never seen."""
        with self._lock:
            return self._parents.get(label, ())

    def _decode(self, entry: Any) -> Labels:
        """An image's entry as (label, score) pairs; the ancestors are noted on the way."""
        labels = self.schema.decode(entry)
        with self._lock:
            for lab in labels:
                if lab.ancestors:
                    known = self._parents.get(lab.name, ())
                    self._parents[lab.name] = known + tuple(
                        a for a in lab.ancestors if a not in known
                    )
        return [(lab.name, lab.score) for lab in labels]

    def annotate(self, x: FloatArray) -> list[list[tuple[str, float]]]:
        """Labels for each image of ``x`` (N, C, H, W) in [0, 1]: (description, score) pairs in
        the order the API returned them (best first), one list per image, in input order."""
        if self._closed:
            raise RemoteError("this HttpLabelTarget is closed")
        arr = checked_images(x)
        if len(arr) == 0:
            return []
        pngs = [encode_png(img) for img in arr]
        keys = [cache_key(p, self.max_results, self.schema.tag) for p in pngs]
        answers: dict[str, Labels] = {}
        for k, text in self._journal.lookup(sorted(set(keys))).items():
            try:
                answers[k] = self._decode(json.loads(text))
            except (ValueError, GarbledError):
                raise RemoteError(f"journal row {k} does not hold a labelled response") from None
        todo = to_send(keys, pngs, answers)

        self._reserve(len(todo))
        try:
            answers.update(self._fetch(list(todo.values())))
        except (RemoteError, QueryRejected) as e:
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

    def _fetch(self, queries: list[Query]) -> dict[str, Labels]:
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
            raise first_error(futures)
        for f in futures:
            out.update(f.result())
        return out

    def _run_batch(self, batch: list[Query]) -> dict[str, Labels]:
        # The bytes sent are the bytes keyed: q.png, from the one encoder.
        pngs = [q.png for q in batch]
        try:
            entries = self.retry_policy.run(
                lambda: self._attempt(pngs),
                what=self.endpoint,
                jitter=self._jitter,
                sleep=self._sleep,
                on_retry=self._count_retry,
            )
        except QueryRejected:
            # A defence's answer to a paid call: billed; no labels, so nothing is cached.
            with self._lock:
                self.paid_queries += len(batch)
            raise
        good: dict[str, Labels] = {}
        rows: list[tuple[str, int, str]] = []
        errors: list[str] = []
        for q, e in zip(batch, entries, strict=True):
            if isinstance(e, ImageError):
                errors.append(f"image {q.index}: error {e.code}: {e.message[:MAX_QUOTED]}")
            else:
                good[q.key] = self._decode(e)
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

    def _attempt(self, pngs: list[bytes]) -> list[Any]:
        with self._lock:
            self.http_calls += 1
        call = self.schema.request(pngs)  # built per attempt: a signature carries the time
        try:
            r = self._client.request(
                call.method, call.url, content=call.content, headers=call.headers
            )
        except httpx.TimeoutException as e:
            raise RetryableError(f"timed out ({type(e).__name__})") from None
        except (httpx.TransportError, httpx.DecodingError) as e:
            raise RetryableError(f"{type(e).__name__}: {e}") from None
        if r.status_code == 200:
            try:
                return self.schema.split(r, len(pngs))
            except GarbledError as e:
                raise RetryableError(f"200 with a bad body: {e}") from None
        raise self.schema.failure(r)

    def probe(self) -> str:
        """Check, for free, that the endpoint answers and takes the key: one call with no
        image, where the API has one (otherwise the check says it was skipped). Returns a
        one-line description; raises RemoteAuthError (the key is refused), QuotaExhausted,
        RemoteUnavailable (nothing answers) or RemoteError (not that API's endpoint)."""
        if self.schema.probe_call() is not None:
            with self._lock:
                self.http_calls += 1
        return probe(self._client, self.schema)

    # --- journal and lifetime ----------------------------------------------------------------

    def journal_entries(self) -> Iterator[JournalEntry]:
        """The journal's rows, oldest first."""
        yield from self._journal.entries(
            lambda e: [(lab.name, lab.score) for lab in self.schema.decode(e)]
        )

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
            f"HttpLabelTarget({self.endpoint!r}, schema={self.schema.name!r}, "
            f"key={self.schema.key_hint()!r}, "
            f"paid_queries={self.paid_queries}, cost={self.cost:.4f})"
        )
