"""The transfer attack's own state, and its guided shrink's: one row per image. Apart from
``transfer.py`` so that the guided shrink (``_guided.py``) can read it without a circle."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .._plain import PlainState
from ..base import FloatArray, IntArray
from ._bases import Weights

__all__ = ["GuidedState", "TransferState"]


@dataclass
class GuidedState(PlainState):
    """The guided shrink's (START, SHRINK) radii, in 1/255 levels."""

    level: IntArray  # the radius of the kept iterate
    k_eps: IntArray  # ε
    delta: IntArray  # the next shrink's size
    radius: IntArray  # the next of the start radii to try
    margin: NDArray[np.float64]  # the kept iterate's visible margin (top-k views)
    miss: IntArray  # misses in a row at a one-level step


@dataclass
class TransferState(PlainState):
    """The rounds of surrogate candidates, and the hand-off's own state (``inner``: Square's,
    GFCS's, RayS's, PI-Square's or HopSkipJump's), which the hand-off attack reads as its own
    while it steps."""

    handoff: str  # square, gfcs, rays, guided or none
    classes: NDArray[np.bool_]  # (N, K): what the surrogates raise (or lower, untargeted)
    phase: IntArray  # rounds, the guided START/SHRINK, or the hand-off's steps
    round: IntArray
    since: IntArray  # rounds since the best candidate improved
    best: NDArray[np.float64]  # the best candidate's progress
    bestx: FloatArray  # and the candidate
    g: FloatArray  # the crafting momentum
    counter: IntArray  # the input-diversity draws' stream counters
    bias: NDArray[np.float32] | None  # the calibration (None: the target's classes differ)
    weights: Weights
    start: FloatArray | None  # the start images given to run
    guided: GuidedState | None
    inner: PlainState | None
