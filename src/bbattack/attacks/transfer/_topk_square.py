"""Square Attack on what a top-k answer shows: the surrogate-guided attack's untargeted
hand-off under partial information (PI). While the clean class is on top its probability is
shown, and with k = 1 the visible margin log p − log(1 − p) is a monotone function of it, so
Square keeps exactly the windows that its cross-entropy loss would keep under full scores; once
the clean class is off the top the goal holds. The loss is ``visible_margin``, PI-Square's."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ...oracle import Observation, Oracle, QueryKind
from .._losses import visible_margin
from ..base import AttackState, FloatArray, IntArray
from ..score.square import SquareAttack

__all__ = ["TopKSquare"]


class TopKSquare(SquareAttack):
    """Square (L∞) under a top-k view with scores. Not registered: the surrogate-guided
    attack hands its untargeted rows to it. Query cost per step: 1, as Square."""

    info = dataclasses.replace(SquareAttack.info, views=("topk",))  # runs on its own in tests

    def _loss(self, obs: Any, state: AttackState, rows: IntArray) -> Any:
        t = state.target[rows]
        m = visible_margin(obs, np.where(t >= 0, t, state.orig[rows]))
        return np.where(t >= 0, -m, m)  # untargeted: −inf once the clean class is not shown

    def _observe(  # type: ignore[override]
        self, oracle: Oracle, state: AttackState, rows: IntArray, x: FloatArray, kind: QueryKind
    ) -> tuple[Observation, NDArray[np.float64]]:
        obs = oracle.query(x, state.ids[rows], kind)
        return obs, self._loss(obs, state, rows)

    def loss_of(self, obs: Observation, state: AttackState, rows: IntArray) -> NDArray[np.float64]:
        return np.asarray(self._loss(obs, state, rows), np.float64)
