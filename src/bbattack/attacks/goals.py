"""What success means, decided in one place.

The same :class:`Goal` answers for early stops, for the final verification, for our attacks and
for the baselines: a targeted row (target ≥ 0) succeeds when the target is the top label
(``top1``) or anywhere in what the view reveals (``topk``); an untargeted row (target −1)
succeeds when the top label is no longer the clean one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from ..errors import UserInputError
from ..oracle import Observation

__all__ = ["Goal", "Within"]

IntArray = NDArray[np.int64]
Within = Literal["top1", "topk"]


@dataclass(frozen=True)
class Goal:
    """Success per row, given each row's target (−1: untargeted) and clean top-1 label."""

    within: Within = "top1"

    def __post_init__(self) -> None:
        if self.within not in ("top1", "topk"):
            raise UserInputError(f"success must be top1 or topk, got {self.within!r}")

    def hit(self, obs: Observation, target: IntArray, orig: IntArray) -> NDArray[np.bool_]:
        target = np.asarray(target, dtype=np.int64)
        orig = np.asarray(orig, dtype=np.int64)
        top1 = obs.top1()
        t = np.maximum(target, 0)
        targeted = top1 == t if self.within == "top1" else obs.rank_of(t) >= 0
        untargeted = (top1 >= 0) & (orig >= 0) & (top1 != orig)
        return np.asarray(np.where(target >= 0, targeted, untargeted))
