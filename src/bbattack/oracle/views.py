"""What a query reveals: views (threat models) and the observations they produce."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ThreatModelError, UserInputError

__all__ = [
    "THREAT_VIEWS",
    "Label",
    "Labels",
    "LabelsObservation",
    "Observation",
    "Scores",
    "ScoresObservation",
    "TopK",
    "TopKObservation",
    "View",
    "frozen_array",
    "threat_view",
    "view_from_name",
]

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float32]


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
    kind = "scores"  # what the registry matches attacks against: scores, topk or labels
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
    kind = "topk"

    def observe(self, probs: FloatArray) -> Observation:
        idx = self._topk_indices(probs, self.k or 1)
        scores = np.take_along_axis(probs, idx, axis=1).astype(np.float32)
        return TopKObservation(frozen_array(idx), frozen_array(scores))


@dataclass(frozen=True)
class Labels(View):
    """The top-k labels, ranked, with no scores: the label-only (LO) threat model."""

    k: int | None = 1
    name = "labels"
    kind = "labels"
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


# The paper's threat models and the view each one attacks through.
THREAT_VIEWS: dict[str, str] = {"ql": "scores", "pi": "topk", "lo": "labels"}


def threat_view(threat: str, k: int = 1) -> View:
    """The view of a threat model: ``ql`` full scores, ``pi`` the top-k with scores, ``lo``
    the top-k labels alone (k >= 1; ``ql`` ignores it)."""
    if threat not in THREAT_VIEWS:
        raise UserInputError(f"unknown threat model {threat!r}; choose ql, pi or lo")
    if threat == "ql":
        return Scores()
    if k < 1:
        raise UserInputError(f"--k must be >= 1, got {k}")
    return view_from_name(THREAT_VIEWS[threat], k)


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
