"""BASES-style ensemble weights (Cai et al., NeurIPS 2022): each surrogate-guided round nudges
one surrogate's weight, and the target's answer decides whether the nudge stays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .._plain import PlainState
from ..base import BoolArray, IntArray

__all__ = ["Weights", "judge_weights", "propose_weights", "weight_state"]


@dataclass
class Weights(PlainState):
    """Per image (rows) and surrogate (columns)."""

    kept: NDArray[np.float64]  # the kept weights
    trying: NDArray[np.float64]  # this round's
    which: IntArray  # the surrogate whose weight moves next
    sign: IntArray  # and in which direction


def weight_state(n: int, s: int) -> Weights:
    """Equal weights for ``n`` images and ``s`` surrogates; the first nudge is +, on the
    first surrogate."""
    return Weights(
        kept=np.full((n, s), 1.0 / s),
        trying=np.full((n, s), 1.0 / s),
        which=np.zeros(n, np.int64),
        sign=np.ones(n, np.int64),
    )


def propose_weights(ws: Weights, rows: IntArray, step: float) -> None:
    """This round's weights: one surrogate's weight nudged by ±``step`` (0: the kept ones)."""
    w = ws.kept[rows].copy()
    if step > 0 and w.shape[1] > 1:
        i = ws.which[rows]
        j = np.arange(len(rows))
        w[j, i] = np.maximum(w[j, i] + ws.sign[rows] * step, 0.0)
        w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    ws.trying[rows] = w


def judge_weights(ws: Weights, rows: IntArray, better: BoolArray) -> None:
    """Keep the nudged weights where the round made progress; else try the other direction,
    then the next surrogate."""
    ws.kept[rows[better]] = ws.trying[rows[better]]
    flip = ~better & (ws.sign[rows] > 0)
    ws.sign[rows] = np.where(flip, -1, 1)
    s = ws.kept.shape[1]
    ws.which[rows] = np.where(flip, ws.which[rows], (ws.which[rows] + 1) % s)
