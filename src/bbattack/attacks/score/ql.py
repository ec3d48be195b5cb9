"""QL: the query-limited NES attack of Ilyas et al. (2018)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from ...oracle import Oracle, QueryKind, ScoresObservation
from .._losses import Loss, score_loss
from .._nes import NESConfig, NESState, nes_gradient
from .._plain import PlainState
from ..base import Attack, AttackState, FloatArray, IntArray
from ..registry import Paper, register

__all__ = ["QLAttack", "QLConfig", "QLState"]


class QLConfig(NESConfig):
    """Defaults: the paper's appendix and the reference code (labsix @076eebd)."""

    loss: Loss = Field(
        "ce", description="loss on log-probabilities: ce (the paper's) or margin (CW logit margin)"
    )


@dataclass
class QLState(PlainState):
    """QL's own state: the NES momentum and plateau window."""

    nes: NESState


ILYAS_2018 = Paper(
    title="Black-box Adversarial Attacks with Limited Queries and Information",
    authors="Ilyas, Engstrom, Athalye, Lin",
    venue="ICML 2018",
    arxiv="1804.08598",
)


@register(
    "ql",
    rank=10,
    paper=ILYAS_2018,
    views=("scores",),
    norms=("linf",),
    budget=20_000,
)
class QLAttack(Attack[QLConfig]):
    """Query-limited attack: NES gradient estimates + L∞ PGD sign steps.

    Paper: Ilyas, Engstrom, Athalye, Lin, "Black-box Adversarial Attacks with Limited Queries
    and Information", ICML 2018 (arXiv:1804.08598), §2.1 / Alg. 1.
    Threat model: full probability vector (``Scores`` view). Norm: L∞, radius ``eps``.
    Loss (``loss="ce"``, the paper's): targeted −log p(target), untargeted log p(original);
    ``loss="margin"``: the logit margin on log-probabilities. Both descended.
    Query cost per step: ``samples`` (NES) + 1 (success check of the new iterate).
    Also: 1 query for the clean image, 1 for the final 8-bit verification.
    """

    config_class = QLConfig

    def _loss(
        self, obs: ScoresObservation, state: AttackState, rows: IntArray
    ) -> NDArray[np.float64]:
        return score_loss(obs, state.target[rows], state.orig[rows], self.config.loss)

    def init(self, oracle: Oracle, state: AttackState, start: FloatArray | None) -> None:
        obs = self.scores(self.clean_query(oracle, state))
        state.loss[:] = self._loss(obs, state, np.arange(len(state.x)))
        state.lr[:] = self.config.max_lr
        state.own = QLState(NESState.zeros(state.x, self.config.plateau_length))

    def step(self, oracle: Oracle, state: AttackState) -> None:
        cfg = self.config
        rows = self.affordable_rows(oracle, state, cfg.samples + 1)
        if not len(rows):
            return
        ids = state.ids
        nes = self.own(state, QLState).nes

        def sample_loss(pts: FloatArray, prow: IntArray) -> tuple[np.ndarray, np.ndarray]:
            obs = self.query_scores(oracle, pts, ids[prow], QueryKind.GRADIENT)
            return self._loss(obs, state, prow), np.ones(len(prow), bool)

        g, _ = nes_gradient(
            state, rows, cfg.sigma, cfg.samples, sample_loss, oracle.bounds, cfg.max_rows
        )
        g = nes.momentum(rows, g, cfg.momentum)
        step = state.lr[rows].reshape(-1, 1, 1, 1) * np.sign(g)
        state.x[rows] = state.ball.project(
            state.x[rows] - step, state.x0[rows], state.eps[rows], oracle.bounds
        )
        # Check the 8-bit image: a success that rounding would undo is no success.
        xq = self.quantized(state, rows, state.x[rows], state.eps[rows])
        obs = self.query_scores(oracle, xq, ids[rows], QueryKind.SUCCESS_CHECK)
        state.xq[rows] = xq
        loss = self._loss(obs, state, rows)
        state.loss[rows] = loss
        self.record(obs, state, rows)
        nes.plateau(state.lr, rows, loss, cfg.plateau_drop, cfg.min_lr)
        self.mark_success(oracle, state, rows, self.goal_hit(state, obs, rows))
