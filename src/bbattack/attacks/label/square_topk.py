"""Square Attack on what a top-k answer shows (PI), untargeted: while the clean class is on top
its probability is shown, and with k = 1 the visible margin log p − log(1 − p) is a monotone
function of it, so Square keeps exactly the windows that its cross-entropy loss would keep
under full scores; once the clean class is off the top the goal holds."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ...oracle import Observation, Oracle, QueryKind
from .._losses import visible_margin
from ..base import AttackState, FloatArray, IntArray
from ..registry import register
from ..score.square import SQUARE_2020, SquareAttack

__all__ = ["TopKSquare"]


@register(
    "square-topk",
    rank=65,  # before RayS: the untargeted PI default (BENCHMARKS.md, heldout-pi-untargeted)
    paper=SQUARE_2020,
    views=("topk",),
    norms=("linf", "l2"),
    targeted=False,
    budget=10_000,
    default_for=("pi",),
    tuned="Square's untargeted defaults (square: bbattack tune on the tuning split, "
    "2026-12-07); measured on heldout-pi-untargeted.toml, 2026-12-08",
)
class TopKSquare(SquareAttack):
    """Square on the clean class's shown score: a random square-window change is kept only if
    the visible margin of the clean class, log p − log(1 − Σ other shown), goes down.

    Paper: Andriushchenko, Croce, Flammarion, Hein, "Square Attack", ECCV 2020
    (arXiv:1912.00049), Alg. 1-3; the loss on a top-k answer is PI-Square's visible margin.
    Threat model: partial information (``TopK`` view: the top-k labels with their scores, k ≥
    1), untargeted. Norms: L∞ and L2, as Square.
    Query cost per step: 1 (the candidate; its answer is also the success check). Also: 1 for
    the clean image, 1 for the start image, 1 for the final verification.
    The surrogate-guided attack hands its untargeted top-k rows to it.
    """

    def _loss(self, obs: Any, state: AttackState, rows: IntArray) -> Any:
        t = state.target[rows]
        m = visible_margin(obs, np.where(t >= 0, t, state.orig[rows]))
        return np.where(t >= 0, -m, m)  # untargeted: −inf once the clean class is not shown

    def _observe(  # type: ignore[override]
        self, oracle: Oracle, state: AttackState, rows: IntArray, x: FloatArray, kind: QueryKind
    ) -> tuple[Observation, NDArray[np.float64]]:
        obs = oracle.query(x, state.ids[rows], kind)
        return obs, self._loss(obs, state, rows)
