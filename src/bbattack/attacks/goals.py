"""What success means, decided in one place.

The same :class:`Goal` answers for early stops, for the final verification, for our attacks and
for the baselines: a targeted row (target ≥ 0) succeeds when the target is the top label
(``top1``) or anywhere in what the view reveals (``topk``); an untargeted row (target −1)
succeeds when the top label is no longer the clean one. Over a label API whose labels have a
hierarchy (a vocabulary with ``count_ancestors``), a label also meets a target that is one of
its ancestors; :meth:`Goal.match` says which label met it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from ..errors import UserInputError
from ..oracle import Observation

__all__ = ["Ancestry", "Goal", "Within"]

IntArray = NDArray[np.int64]
Within = Literal["top1", "topk"]


@runtime_checkable
class Ancestry(Protocol):
    """Label ids with ancestors (a label API's vocabulary, :class:`bbattack.Vocabulary`)."""

    def under(self, labels: IntArray, targets: IntArray) -> NDArray[np.bool_]:
        """(N, K) labels, (N,) targets: each label is its row's target or below it."""
        ...


@dataclass(frozen=True)
class Goal:
    """Success per row, given each row's target (−1: untargeted) and clean top-1 label.
    ``ancestry``: a label also meets a target that is one of its ancestors."""

    within: Within = "top1"
    ancestry: Ancestry | None = None

    def __post_init__(self) -> None:
        if self.within not in ("top1", "topk"):
            raise UserInputError(f"success must be top1 or topk, got {self.within!r}")

    @classmethod
    def of(cls, within: Within, names: object) -> Goal:
        """The goal over a target's names: a vocabulary that counts ancestors is the ancestry."""
        if getattr(names, "count_ancestors", False) and isinstance(names, Ancestry):
            return cls(within, names)
        return cls(within)

    def match(self, obs: Observation, target: IntArray) -> IntArray:
        """Per row, the revealed label that meets the row's target (−1: none): the target
        itself, or with an ancestry the first label below it (only the top one under top1)."""
        t = np.maximum(np.asarray(target, dtype=np.int64), 0)
        labels = getattr(obs, "labels", None)
        if self.ancestry is None or labels is None:
            ok = obs.top1() == t if self.within == "top1" else obs.rank_of(t) >= 0
            return np.asarray(np.where(ok, t, -1), np.int64)
        shown = np.asarray(labels, np.int64)[:, :1] if self.within == "top1" else labels
        under = self.ancestry.under(shown, t) & (shown >= 0)
        first = shown[np.arange(len(shown)), under.argmax(axis=1)]
        return np.asarray(np.where(under.any(axis=1), first, -1), np.int64)

    def hit(self, obs: Observation, target: IntArray, orig: IntArray) -> NDArray[np.bool_]:
        target = np.asarray(target, dtype=np.int64)
        orig = np.asarray(orig, dtype=np.int64)
        top1 = obs.top1()
        targeted = self.match(obs, target) >= 0
        untargeted = (top1 >= 0) & (orig >= 0) & (top1 != orig)
        return np.asarray(np.where(target >= 0, targeted, untargeted))
