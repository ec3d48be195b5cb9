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

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from .errors import BudgetExhausted, ThreatModelError, UserInputError
from .models import Classifier

__all__ = [
    "Label",
    "Labels",
    "LabelsObservation",
    "NameIndex",
    "Observation",
    "ObservationSource",
    "Oracle",
    "QueryKind",
    "Scores",
    "ScoresObservation",
    "TopK",
    "TopKObservation",
    "View",
    "frozen_array",
    "view_from_name",
]

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float32]
NO_LIMIT = np.iinfo(np.int64).max // 4


class QueryKind(StrEnum):
    """Why a query was made; the oracle keeps a per-example count for each kind."""

    INIT = "init"  # clean image, start-image checks
    GRADIENT = "gradient"  # NES samples
    LINE_SEARCH = "line_search"  # step proposals
    SUCCESS_CHECK = "success_check"  # checking the new iterate
    NOISE = "noise"  # label-only proxy-score samples
    FINAL = "final"  # verification of the saved 8-bit image


KINDS: tuple[QueryKind, ...] = tuple(QueryKind)
_KIND_INDEX = {k: i for i, k in enumerate(KINDS)}


def frozen_array(a: NDArray[Any]) -> NDArray[Any]:
    """An owned, read-only copy: no view into the model's full output can leak through `.base`."""
    out = np.array(a, copy=True)
    out.setflags(write=False)
    return out


# ---------------------------------------------------------------- observations


@dataclass(frozen=True, slots=True)
class ScoresObservation:
    """Full probability vectors (QL threat model)."""

    probs: FloatArray  # (B, K)

    def __len__(self) -> int:
        return len(self.probs)

    def top1(self) -> IntArray:
        return np.asarray(self.probs.argmax(axis=1), dtype=np.int64)

    def score_of(self, target: IntArray) -> FloatArray:
        return np.asarray(self.probs[np.arange(len(self.probs)), target], dtype=np.float32)

    def rank_of(self, target: IntArray) -> IntArray:
        p = self.score_of(target)[:, None]
        return np.asarray((self.probs > p).sum(axis=1), dtype=np.int64)

    def topk(self, row: int, n: int = 5) -> list[tuple[int, float | None]]:
        order = np.argsort(-self.probs[row], kind="stable")[:n]
        return [(int(i), float(self.probs[row, i])) for i in order]


@dataclass(frozen=True, slots=True)
class _Ranked:
    """Ranked labels, best first; -1 pads rows that reveal fewer labels."""

    labels: IntArray  # (B, k)

    def __len__(self) -> int:
        return len(self.labels)

    def top1(self) -> IntArray:
        return np.asarray(self.labels[:, 0], dtype=np.int64)

    def rank_of(self, target: IntArray) -> IntArray:
        """0-based rank of the target among the revealed labels; -1 where it is not revealed."""
        hit = self.labels == np.asarray(target)[:, None]
        return np.where(hit.any(axis=1), hit.argmax(axis=1), -1).astype(np.int64)


@dataclass(frozen=True, slots=True)
class TopKObservation(_Ranked):
    """The top-k labels with their probabilities (PI threat model). Nothing else."""

    scores: FloatArray  # (B, k)

    def score_of(self, target: IntArray) -> FloatArray:
        """The target's probability where revealed, NaN elsewhere."""
        hit = self.labels == np.asarray(target)[:, None]
        s = np.where(hit, self.scores, 0.0).sum(axis=1)
        return np.where(hit.any(axis=1), s, np.nan).astype(np.float32)

    def topk(self, row: int, n: int = 5) -> list[tuple[int, float | None]]:
        return [
            (int(i), float(s))
            for i, s in zip(self.labels[row, :n], self.scores[row, :n], strict=True)
            if i >= 0  # -1 pads rows that got fewer labels
        ]


@dataclass(frozen=True, slots=True)
class LabelsObservation(_Ranked):
    """The top-k labels, ranked, with no scores (label-only threat model)."""

    def score_of(self, target: IntArray) -> FloatArray:
        raise ThreatModelError("the label-only view reveals no scores")

    def topk(self, row: int, n: int = 5) -> list[tuple[int, float | None]]:
        return [(int(i), None) for i in self.labels[row, :n] if i >= 0]


Observation = ScoresObservation | TopKObservation | LabelsObservation

# ---------------------------------------------------------------- views


@dataclass(frozen=True)
class View:
    """What a query reveals. Subclasses turn a probability matrix into an observation."""

    k: int | None = None
    name = "view"
    reveals_scores = True

    def __post_init__(self) -> None:
        if self.k is not None and self.k < 1:
            raise UserInputError(f"k must be >= 1, got {self.k}")

    def observe(self, probs: FloatArray) -> Observation:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"view": self.name, "k": self.k}

    @staticmethod
    def _topk_indices(probs: FloatArray, k: int) -> IntArray:
        k = min(k, probs.shape[1])
        # argpartition keeps this O(K) per row; only the k winners get sorted.
        part = (
            np.argpartition(-probs, k - 1, axis=1)[:, :k]
            if k < probs.shape[1]
            else np.tile(np.arange(probs.shape[1]), (len(probs), 1))
        )
        vals = np.take_along_axis(probs, part, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        return np.asarray(np.take_along_axis(part, order, axis=1), dtype=np.int64)


@dataclass(frozen=True)
class Scores(View):
    """The full probability vector: the query-limited (QL) threat model."""

    name = "scores"

    def observe(self, probs: FloatArray) -> Observation:
        return ScoresObservation(frozen_array(probs.astype(np.float32)))


@dataclass(frozen=True)
class TopK(View):
    """The top-k labels with their probabilities: the partial-information (PI) threat model."""

    k: int | None = 1
    name = "topk"

    def observe(self, probs: FloatArray) -> Observation:
        idx = self._topk_indices(probs, self.k or 1)
        scores = np.take_along_axis(probs, idx, axis=1).astype(np.float32)
        return TopKObservation(frozen_array(idx), frozen_array(scores))


@dataclass(frozen=True)
class Labels(View):
    """The top-k labels, ranked, with no scores: the label-only (LO) threat model."""

    k: int | None = 1
    name = "labels"
    reveals_scores = False

    def observe(self, probs: FloatArray) -> Observation:
        return LabelsObservation(frozen_array(self._topk_indices(probs, self.k or 1)))


@dataclass(frozen=True)
class Label(Labels):
    """The top-1 label only (hard-label / decision-based threat model)."""

    k: int | None = 1
    name = "label"

    def __post_init__(self) -> None:
        if self.k != 1:
            raise UserInputError("the label view reveals exactly one label (k=1)")


def view_from_name(name: str, k: int = 1) -> View:
    """``scores``, ``topk``, ``labels`` or ``label``."""
    match name:
        case "scores":
            return Scores()
        case "topk":
            return TopK(k)
        case "labels":
            return Labels(k)
        case "label":
            return Label()
    raise UserInputError(f"unknown view {name!r}; choose scores, topk, labels or label")


# ---------------------------------------------------------------- oracle


class NameIndex(Protocol):
    """Class names or label strings by id (ClassNames, targets.Vocabulary)."""

    def name(self, class_id: int) -> str: ...

    def resolve(self, key: str | int) -> int: ...


class ObservationSource(Protocol):
    """A target that answers with observations itself (label APIs) instead of probabilities."""

    input_shape: tuple[int, int, int]
    num_classes: int
    name: str
    backend: str

    @property
    def class_names(self) -> NameIndex | None: ...

    def observe(self, x: FloatArray, view: View) -> Observation: ...


@dataclass
class QueryEvent:
    """Passed to oracle hooks after each answered batch."""

    kind: QueryKind
    rows: int
    total: int


@dataclass
class Oracle:
    """Counts, budgets and filters every query an attack makes.

    Args:
        model: the classifier to query.
        view: what each query reveals (Scores, TopK, Labels, Label).
        max_queries: hard per-example budget (None: unlimited).
        max_total_queries: hard budget over all examples (None: unlimited).
        hooks: callables run after each answered batch (telemetry, progress bars).
    """

    model: Classifier | ObservationSource
    view: View = field(default_factory=Scores)
    max_queries: int | None = None
    max_total_queries: int | None = None
    hooks: list[Callable[[QueryEvent], None]] = field(default_factory=list)
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        for name in ("max_queries", "max_total_queries"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise UserInputError(f"{name} must be >= 1, got {v}")
        self._counts = np.zeros((0, len(KINDS)), dtype=np.int64)

    # -- bookkeeping

    @property
    def class_names(self) -> NameIndex | None:
        return self.model.class_names

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.model.input_shape

    def register(self, n: int) -> IntArray:
        """Open counters for ``n`` new examples and return their ids."""
        start = len(self._counts)
        self._counts = np.concatenate([self._counts, np.zeros((n, len(KINDS)), np.int64)])
        return np.arange(start, start + n, dtype=np.int64)

    @property
    def total_queries(self) -> int:
        return int(self._counts.sum())

    def queries(self, ids: IntArray | None = None) -> IntArray:
        """Queries used per example."""
        c: IntArray = self._counts.sum(axis=1)
        return c if ids is None else c[ids]

    def queries_by_kind(self, example: int) -> dict[str, int]:
        return {k.value: int(self._counts[example, i]) for i, k in enumerate(KINDS)}

    def remaining(self, ids: IntArray) -> IntArray:
        """Per-example queries left (ignores the shared total; see :meth:`affordable`)."""
        if self.max_queries is None:
            return np.full(len(ids), NO_LIMIT, dtype=np.int64)
        return np.asarray(self.max_queries - self.queries(ids), dtype=np.int64)

    def total_remaining(self) -> int:
        if self.max_total_queries is None:
            return int(NO_LIMIT)
        return self.max_total_queries - self.total_queries

    def affordable(
        self,
        ids: IntArray,
        cost: int | IntArray,
        reserve: int = 0,
        total_reserve: int | None = None,
    ) -> NDArray[np.bool_]:
        """Which examples can spend ``cost`` more queries and still keep ``reserve`` back.

        Examples are served in order against the shared total, which keeps ``total_reserve``
        back (default: ``reserve`` for each of ``ids``; pass more to also cover examples that
        are not asking now but still need their reserved queries).
        """
        cost_a = np.broadcast_to(np.asarray(cost, dtype=np.int64), (len(ids),))
        ok = self.remaining(ids) >= cost_a + reserve
        held = reserve * len(ids) if total_reserve is None else total_reserve
        left = self.total_remaining() - held
        spend = np.cumsum(np.where(ok, cost_a, 0))
        return np.asarray(ok & (spend <= left))

    # -- the query

    def query(self, x: NDArray[np.floating], ids: IntArray, kind: QueryKind) -> Observation:
        """Evaluate a batch of images; row ``j`` is charged to example ``ids[j]``.

        Raises BudgetExhausted (nothing charged, nothing evaluated) if the batch would cross a
        budget, and ValueError for images outside the bounds.
        """
        ids = np.asarray(ids, dtype=np.int64)
        if x.ndim != 4 or len(x) != len(ids):
            raise ValueError(
                f"expected (N, C, H, W) images with one id per row, got {x.shape} and {ids.shape}"
            )
        if len(ids) == 0:
            if isinstance(self.model, Classifier):
                return self.view.observe(np.zeros((0, self.num_classes), np.float32))
            # A label target answers an empty batch without a call.
            return self.model.observe(np.zeros((0, *self.input_shape), np.float32), self.view)
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self._counts)):
            raise ValueError("query for an unregistered example id")
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
                f"batch of {len(ids)} would exceed the total budget of {self.max_total_queries}"
            )
        if isinstance(self.model, Classifier):
            obs = self.view.observe(self.model(np.asarray(x, dtype=np.float32)))
        else:
            obs = self.model.observe(np.asarray(x, dtype=np.float32), self.view)
        self._counts[:, _KIND_INDEX[kind]] += add
        event = QueryEvent(kind, len(ids), self.total_queries)
        for hook in self.hooks:
            hook(event)
        return obs
