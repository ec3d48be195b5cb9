"""The query oracle: the only thing an attack sees.

An :class:`Oracle` wraps a classifier and a threat-model :class:`View`. Every query goes through
:meth:`Oracle.query`, which counts it against the example it belongs to, by kind, and enforces
the budgets.

Budget rule (refuse, never trim): a query batch that would take any example past its
per-example budget, or the oracle past its total budget, raises :class:`BudgetExhausted` before
anything is evaluated or charged. Attacks plan with :meth:`Oracle.affordable` so that they never
hit it; the exception is the backstop that makes "a budget is never exceeded" hold regardless.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NoReturn

import numpy as np
from numpy.typing import NDArray

from .._classifier import Classifier
from ..errors import BudgetExhausted, UserInputError, ViewRefused
from .journal import Journal, JournalError, target_identity
from .middleware import Forward, Middleware, Query
from .targets import NameIndex, Target, as_target
from .views import Observation, Scores, View

__all__ = ["KINDS", "NO_LIMIT", "Oracle", "QueryEvent", "QueryKind"]

IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]
NO_LIMIT = np.iinfo(np.int64).max // 4


class QueryKind(StrEnum):
    """Why a query was made; the oracle keeps a per-example count for each kind."""

    INIT = "init"  # clean image, start-image checks
    GRADIENT = "gradient"  # NES samples
    LINE_SEARCH = "line_search"  # step proposals
    SUCCESS_CHECK = "success_check"  # checking the new iterate
    NOISE = "noise"  # label-only proxy-score samples
    PROBE = "probe"  # decision-based: a direction checked at the best radius, gradient probes
    BINARY_SEARCH = "binary_search"  # decision-based: the search for the boundary on a ray
    TRANSFER = "transfer"  # surrogate-guided: a candidate crafted on the surrogates
    FINAL = "final"  # verification of the saved 8-bit image


KINDS: tuple[QueryKind, ...] = tuple(QueryKind)
_KIND_INDEX = {k: i for i, k in enumerate(KINDS)}


@dataclass
class QueryEvent:
    """Passed to oracle hooks after each answered batch, with what the attack was shown."""

    kind: QueryKind
    rows: int
    total: int
    observation: Observation | None = field(default=None, compare=False, repr=False)


class Oracle:
    """Counts, budgets and filters every query an attack makes.

    The target is private: an attack sees the view's observations, the class names, the input
    shape and its counters, never the model.

    Args:
        target: what answers queries (a Classifier, a LabelTarget, any :class:`Target`).
        view: what each query reveals (Scores, TopK, Labels, Label). A view the target cannot
            serve is refused here, before anything is paid.
        max_queries: hard per-example budget (None: unlimited).
        max_total_queries: hard budget over all examples (None: unlimited). A target's own
            limit (a spend cap, a quota) tightens it.
        hooks: callables run after each answered batch (telemetry, progress bars).
        journal: the query journal (a :class:`~bbattack.oracle.journal.Journal`, or a path:
            a new run in that SQLite file). Every query is written there before its answer
            is used; queries it already holds are answered from it, unpaid, and still
            counted here as in the run that paid them. The attack never sees it.
        middleware: layers above the journal, outermost first (defences in front of the
            target; see :mod:`bbattack.oracle.middleware`). They see every query, repeats
            included, and their state is part of :meth:`snapshot`.
        key: the caller's account, as middleware sees it (an API key's name; ``local``).
    """

    def __init__(
        self,
        target: Classifier | Target,
        view: View | None = None,
        max_queries: int | None = None,
        max_total_queries: int | None = None,
        hooks: list[Callable[[QueryEvent], None]] | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        journal: Journal | str | os.PathLike[str] | None = None,
        middleware: list[Middleware] | None = None,
        key: str = "local",
    ) -> None:
        for name, v in (("max_queries", max_queries), ("max_total_queries", max_total_queries)):
            if v is not None and v < 1:
                raise UserInputError(f"{name} must be >= 1, got {v}")
        self._target = as_target(target)
        self.view: View = Scores() if view is None else view
        why = self._target.refuses(self.view)
        if why is not None:
            raise ViewRefused(why)
        self.max_queries = max_queries
        self.max_total_queries = max_total_queries
        self.hooks: list[Callable[[QueryEvent], None]] = list(hooks or [])
        self.bounds = bounds
        self._counts = np.zeros((0, len(KINDS)), dtype=np.int64)
        self._lost = np.zeros(0, dtype=np.int64)
        self._journal = journal if isinstance(journal, Journal | None) else Journal(journal)
        if self._journal is not None:
            self._journal.attach(self._target, self.view)
        self.middleware: tuple[Middleware, ...] = tuple(middleware or ())
        self._key = key

    def __repr__(self) -> str:
        return (
            f"Oracle(target={self._target.name!r}, view={self.view!r}, "
            f"max_queries={self.max_queries}, max_total_queries={self.max_total_queries})"
        )

    # -- what an attack may know about the target

    @property
    def class_names(self) -> NameIndex | None:
        return self._target.class_names

    @property
    def num_classes(self) -> int:
        return self._target.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self._target.input_shape

    @property
    def target_name(self) -> str:
        return self._target.name

    @property
    def backend(self) -> str:
        return self._target.backend

    @property
    def target_identity(self) -> str:
        """Which target answers (a model's name, backend and weights hash; an API's endpoint):
        what checkpoints and provenance record."""
        return target_identity(self._target)

    # -- bookkeeping

    def register(self, n: int) -> IntArray:
        """Open counters for ``n`` new examples and return their ids."""
        start = len(self._counts)
        self._counts = np.concatenate([self._counts, np.zeros((n, len(KINDS)), np.int64)])
        self._lost = np.concatenate([self._lost, np.zeros(n, np.int64)])
        return np.arange(start, start + n, dtype=np.int64)

    @property
    def total_queries(self) -> int:
        return int(self._counts.sum())

    def queries(self, ids: IntArray | None = None) -> IntArray:
        """Queries used per example (charged ones, answered or lost)."""
        c: IntArray = self._counts.sum(axis=1)
        return c if ids is None else c[ids]

    def queries_by_kind(self, example: int) -> dict[str, int]:
        return {k.value: int(self._counts[example, i]) for i, k in enumerate(KINDS)}

    def lost_queries(self, example: int) -> int:
        """Queries charged to ``example`` whose answer never came back (a failed remote call)."""
        return int(self._lost[example])

    def remaining(self, ids: IntArray) -> IntArray:
        """Per-example queries left (ignores the shared total; see :meth:`affordable`)."""
        if self.max_queries is None:
            return np.full(len(ids), NO_LIMIT, dtype=np.int64)
        return np.asarray(self.max_queries - self.queries(ids), dtype=np.int64)

    def total_remaining(self) -> int:
        """Queries left in the shared total: the oracle's own and the target's limit."""
        own = NO_LIMIT if self.max_total_queries is None else self.max_total_queries
        left = int(own - self.total_queries)
        limit = self._target.query_limit()
        if self._journal is not None:
            limit = self._journal.query_limit(limit)
        return left if limit is None else min(left, int(limit))

    def affordable(
        self,
        ids: IntArray,
        cost: int | IntArray,
        reserve: int = 0,
        total_reserve: int | None = None,
    ) -> BoolArray:
        """Which examples can spend ``cost`` more queries and still keep ``reserve`` back.

        Examples are served in order against the shared total, which keeps ``total_reserve``
        back (default: ``reserve`` for each of ``ids``; pass more to also cover examples that
        are not asking now but still need their reserved queries). A refused row spends
        nothing, so a cheaper row after it may still be served.
        """
        cost_a = np.broadcast_to(np.asarray(cost, dtype=np.int64), (len(ids),))
        ok = np.asarray(self.remaining(ids) >= cost_a + reserve).copy()
        held = reserve * len(ids) if total_reserve is None else total_reserve
        left = self.total_remaining() - held
        # First fit in order; one pass per refused row, and a single pass when all fit.
        while True:
            over = ok & (np.cumsum(np.where(ok, cost_a, 0)) > left)
            if not over.any():
                return ok
            ok[int(over.argmax())] = False

    # -- the query

    def query(self, x: NDArray[np.floating], ids: IntArray, kind: QueryKind) -> Observation:
        """Evaluate a batch of images; row ``j`` is charged to example ``ids[j]``.

        Raises BudgetExhausted (nothing charged, nothing evaluated) if the batch would cross a
        budget, and ValueError for images outside the bounds. The batch is charged before it
        is sent: a call that fails after it may have been billed stays spent (and lost).
        """
        ids = np.asarray(ids, dtype=np.int64)
        if x.ndim != 4 or len(x) != len(ids):
            raise ValueError(
                f"expected (N, C, H, W) images with one id per row, got {x.shape} and {ids.shape}"
            )
        if len(ids) == 0:
            return self._target.observe(np.zeros((0, *self.input_shape), np.float32), self.view)
        if ids.min() < 0 or ids.max() >= len(self._counts):
            raise ValueError("query for an unregistered example id")
        if tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ValueError(f"expected images of shape (N, {self.input_shape}), got {x.shape}")
        lo, hi = self.bounds
        # NaN fails both comparisons and ±inf fails one: two passes check everything.
        if not (x.min() >= lo - 1e-6 and x.max() <= hi + 1e-6):
            raise ValueError(f"query images must be finite and within {self.bounds}")
        add = np.bincount(ids, minlength=len(self._counts))
        if self.max_queries is not None:
            over = self._counts.sum(axis=1) + add > self.max_queries
            if over.any():
                raise BudgetExhausted(
                    f"{int(over.sum())} example(s) would exceed the per-example budget of "
                    f"{self.max_queries}"
                )
        if len(ids) > self.total_remaining():
            raise BudgetExhausted(
                f"batch of {len(ids)} would exceed the total budget left ({self.total_remaining()})"
            )
        self._counts[:, _KIND_INDEX[kind]] += add
        xf = np.asarray(x, dtype=np.float32)
        try:
            obs = self._through(Query(xf, ids, kind.value, self.view, self._key))
        except BaseException:
            self._lost += add
            raise
        event = QueryEvent(kind, len(ids), self.total_queries, obs)
        for hook in self.hooks:
            hook(event)
        return obs

    def _observe(self, x: NDArray[np.float32]) -> Observation:
        return self._target.observe(x, self.view)

    def _through(self, q: Query) -> Observation:
        """Down the stack: each middleware, then the journal, then the target."""

        def bottom(x: NDArray[np.float32]) -> Observation:
            if self._journal is None:
                return self._observe(x)
            return self._journal.answer(x, q.ids, q.kind, q.view, self._observe)

        def refuse(x: NDArray[np.float32], error: BaseException) -> NoReturn:
            # The journal records the refused rows ('refused', with the error) without asking
            # the target; on a resume or replay they are on its tape, and the restored layer
            # refuses them again.
            if self._journal is not None:
                self._journal.refuse(x, q.ids, q.kind, error)
            raise error

        q = Query(q.x, q.ids, q.kind, q.view, q.key, refuse)
        forward: Forward = bottom
        for m in reversed(self.middleware):
            forward = _bind(m, q, forward)
        return forward(q.x)

    # -- checkpoints

    def snapshot(self) -> dict[str, Any]:
        """The counters as plain data, and where the journal stands: what a checkpoint holds."""
        j = self._journal
        return {
            "counts": self._counts.copy(),
            "lost": self._lost.copy(),
            "journal_run": None if j is None else j.run,
            "journal_position": None if j is None else j.position,
            "middleware": [m.snapshot() for m in self.middleware],
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Take the counters of :meth:`snapshot` (on a fresh oracle); a journal opened with
        ``resume_run`` goes on from the snapshot's position."""
        if len(self._counts):
            raise ValueError("restore() needs an oracle with no examples registered yet")
        counts = np.asarray(snap["counts"], dtype=np.int64)
        lost = np.asarray(snap["lost"], dtype=np.int64)
        if counts.ndim != 2 or counts.shape[1] != len(KINDS) or lost.shape != (len(counts),):
            raise ValueError(f"bad oracle snapshot: counts {counts.shape}, lost {lost.shape}")
        if self._journal is not None and self._journal.mode == "resume":
            if snap.get("journal_run") is None:
                raise JournalError("the checkpoint was made without a journal: nothing to resume")
            self._journal.seek(int(snap["journal_run"]), int(snap["journal_position"]))
        layers = snap.get("middleware", [])
        if len(layers) != len(self.middleware):
            raise ValueError(
                f"the checkpoint holds {len(layers)} middleware state(s), this oracle has "
                f"{len(self.middleware)} layer(s)"
            )
        for m, s in zip(self.middleware, layers, strict=True):
            m.restore(s)
        self._counts, self._lost = counts.copy(), lost.copy()


def _bind(m: Middleware, q: Query, below: Forward) -> Forward:
    """``m`` over ``below``, for the batch ``q`` (whose images a layer above may change)."""
    return lambda x: m.handle(Query(x, q.ids, q.kind, q.view, q.key, q.refuse), below)
