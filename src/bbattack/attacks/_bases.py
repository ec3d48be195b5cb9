"""BASES-style ensemble weights (Cai et al., NeurIPS 2022): each surrogate-guided round nudges
one surrogate's weight, and the target's answer decides whether the nudge stays. The state
is four plain arrays in ``state.extra``."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import AttackState, BoolArray, IntArray

__all__ = ["judge_weights", "propose_weights", "weight_state"]


def weight_state(n: int, s: int) -> dict[str, Any]:
    """Equal weights for ``n`` images and ``s`` surrogates; the first nudge is +, on the
    first surrogate."""
    return {
        "tr_w": np.full((n, s), 1.0 / s),  # the kept weights
        "tr_wtry": np.full((n, s), 1.0 / s),  # this round's
        "tr_wi": np.zeros(n, np.int64),  # the surrogate whose weight moves next
        "tr_wsign": np.ones(n, np.int64),  # and in which direction
    }


def propose_weights(state: AttackState, rows: IntArray, step: float) -> None:
    """This round's weights: one surrogate's weight nudged by ±``step`` (0: the kept ones)."""
    ex = state.extra
    w = ex["tr_w"][rows].copy()
    if step > 0 and w.shape[1] > 1:
        i = ex["tr_wi"][rows]
        j = np.arange(len(rows))
        w[j, i] = np.maximum(w[j, i] + ex["tr_wsign"][rows] * step, 0.0)
        w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    ex["tr_wtry"][rows] = w


def judge_weights(state: AttackState, rows: IntArray, better: BoolArray) -> None:
    """Keep the nudged weights where the round made progress; else try the other direction,
    then the next surrogate."""
    ex = state.extra
    ex["tr_w"][rows[better]] = ex["tr_wtry"][rows[better]]
    flip = ~better & (ex["tr_wsign"][rows] > 0)
    ex["tr_wsign"][rows] = np.where(flip, -1, 1)
    s = ex["tr_w"].shape[1]
    ex["tr_wi"][rows] = np.where(flip, ex["tr_wi"][rows], (ex["tr_wi"][rows] + 1) % s)
