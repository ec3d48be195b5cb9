"""Square Attack whose window signs may follow a surrogate prior: the surrogate-guided attack's
score-based hand-off. The prior is used as often as it earns: each image keeps count of how
often prior-signed and random-signed windows are kept, and draws the prior with a probability
that follows the two rates, so a prior that predicts nothing about the target decays to
plain Square's random signs.

The idea of searching along a surrogate's gradient while weighing it by how well it predicts
the target is P-RGF's (Cheng et al., NeurIPS 2019, arXiv:1906.06919) and the Subspace
Attack's (Guo et al., NeurIPS 2019, arXiv:1906.04392); the window-sign form and the
acceptance-rate weighting are ours.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from ...oracle import Oracle
from .._rand import Streams
from .._windows import window_mask
from ..base import AttackState, BoolArray, FloatArray, IntArray
from ..score.square import SquareAttack, SquareConfig, SquareState

__all__ = ["PriorSquare", "PriorSquareConfig", "PriorSquareState"]


class PriorSquareConfig(SquareConfig):
    """Square's hyperparameters, and how much of the search the prior may take."""

    prior_max: float = Field(
        0.9, ge=0.0, le=1.0, description="the largest share of windows signed by the prior"
    )


@dataclass
class PriorSquareState(SquareState):
    """Square's state, and per image: the prior at the iterate, whether it is current, this
    step's arm (0 random, 1 prior), and the windows tried and kept per arm."""

    prior: FloatArray  # (N, C, H, W): the direction that raises the goal's surrogate score
    fresh: BoolArray  # the prior was taken at the current iterate
    arm: IntArray  # this step's arm per image
    stepping: BoolArray  # drew a window this step
    tries: IntArray  # (N, 2) windows tried: random, prior
    wins: IntArray  # (N, 2) windows kept


class PriorSquare(SquareAttack):
    """Square (L∞) with prior-signed windows (see the module). Not registered: the
    surrogate-guided attack hands its rows to it and keeps its prior current."""

    config_class = PriorSquareConfig
    config: PriorSquareConfig

    def prepare(self, oracle: Oracle, state: AttackState) -> PriorSquareState:
        base = super().prepare(oracle, state)
        n = len(state.x)
        return PriorSquareState(
            **{f.name: getattr(base, f.name) for f in dataclasses.fields(base)},
            prior=np.zeros_like(state.x),
            fresh=np.zeros(n, bool),
            arm=np.zeros(n, np.int64),
            stepping=np.zeros(n, bool),
            tries=np.zeros((n, 2), np.int64),
            wins=np.zeros((n, 2), np.int64),
        )

    def stale(self, state: AttackState) -> IntArray:
        """Active rows whose prior is not at their iterate (the caller refreshes them)."""
        own = self.own(state, PriorSquareState)
        out: IntArray = np.flatnonzero(state.active & ~own.fresh)
        return out

    def set_prior(self, state: AttackState, rows: IntArray, prior: FloatArray) -> None:
        own = self.own(state, PriorSquareState)
        own.prior[rows] = prior
        own.fresh[rows] = True

    def share(self, state: AttackState, rows: IntArray) -> NDArray[np.float64]:
        """Each row's probability of a prior-signed window: ``prior_max`` times the prior's
        share of the two arms' kept rates (Laplace-smoothed; even odds at the start)."""
        own = self.own(state, PriorSquareState)
        rate = (own.wins[rows] + 1.0) / (own.tries[rows] + 2.0)
        return np.asarray(self.config.prior_max * rate[:, 1] / rate.sum(axis=1))

    def _signs(
        self, state: AttackState, rows: IntArray, rng: Streams, rc: IntArray, s: IntArray
    ) -> NDArray[np.bool_]:
        up = super()._signs(state, rows, rng, rc, s)  # drawn either way: the streams align
        own = self.own(state, PriorSquareState)
        use = (rng.uniform(rows, 1)[:, 0] < self.share(state, rows)) & own.fresh[rows]
        if use.any():
            _, h, w = state.x.shape[1:]
            at = rows[use]
            mask = window_mask(rc[use, 0], rc[use, 1], s[use], h, w)
            prior_up = (own.prior[at] * mask).sum(axis=(2, 3)) > 0
            if own.hi is None or own.lo is None:
                raise TypeError("prior-signed windows are L∞: this state has no vertices")
            # A window already as the prior wants it would be flipped against the prior
            # (Square never asks its current image again): random signs there instead.
            prop = np.where(prior_up[:, :, None, None], own.hi[at], own.lo[at])
            done = ((state.x[at] == prop) | ~mask).all(axis=(1, 2, 3))
            use[np.flatnonzero(use)[done]] = False
            up[use] = prior_up[~done]
        own.arm[rows] = use
        own.stepping[rows] = True
        return up

    def step(self, oracle: Oracle, state: AttackState) -> None:
        super().step(oracle, state)
        own = self.own(state, PriorSquareState)
        rows = np.flatnonzero(own.stepping)
        kept = own.since[rows] == 0  # Square zeroes it exactly when a window is kept
        arm = own.arm[rows]
        np.add.at(own.tries, (rows, arm), 1)
        np.add.at(own.wins, (rows, arm), kept.astype(np.int64))
        own.fresh[rows[kept]] = False
        own.stepping[rows] = False
