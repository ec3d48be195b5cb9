"""SimBA-DCT (Guo, Gardner, You, Wilson, Weinberger, ICML 2019): try ±α along one
low-frequency DCT direction per step, written from the paper."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from ...oracle import Oracle, QueryKind, ScoresObservation
from .._losses import Loss, score_loss
from .._plain import PlainState
from .._rand import Streams
from ..balls import Norm
from ..base import Attack, AttackConfig, AttackState, FloatArray, IntArray
from ..registry import Paper, register

__all__ = ["SIMBA_2019", "SimBAAttack", "SimBAConfig", "SimBAState"]

SIMBA_2019 = Paper(
    title="Simple Black-box Adversarial Attacks",
    authors="Guo, Gardner, You, Wilson, Weinberger",
    venue="ICML 2019",
    arxiv="1905.07121",
)


class SimBAConfig(AttackConfig):
    """Defaults: the paper's SimBA-DCT on ImageNet (step 0.2, the lowest 1/8 of the
    frequencies; probabilities, which order candidates as the cross-entropy does)."""

    norm: Norm = Field("l2", description="l2: SimBA's natural ball")
    step: float = Field(0.2, gt=0.0, description="L2 length of each trial step (the paper's alpha)")
    freq_ratio: float = Field(0.125, gt=0.0, le=1.0, description="low-frequency block side")
    loss: Loss = Field("ce", description="loss on log-probabilities: ce (the paper) or margin")


def _dct_basis(n: int) -> NDArray[np.float64]:
    """(n, n) orthonormal DCT-II basis: row k is the k-th frequency."""
    i = np.arange(n)
    b = np.cos(np.pi * (i[None, :] + 0.5) * i[:, None] / n) * np.sqrt(2.0 / n)
    b[0] /= np.sqrt(2.0)
    out: NDArray[np.float64] = b
    return out


@dataclass
class SimBAState(PlainState):
    """SimBA's own state: each image's order of the low-frequency DCT directions."""

    rng: Streams
    order: IntArray  # (N, C·fh·fw): this round's order of the directions
    pos: IntArray  # the next unread place in ``order``
    fh: int  # the low-frequency block: fh × fw frequencies per channel
    fw: int
    bh: NDArray[np.float64]  # (H, H) DCT basis of the rows
    bw: NDArray[np.float64]  # (W, W) DCT basis of the columns


@register(
    "simba",
    rank=60,
    paper=SIMBA_2019,
    views=("scores",),
    norms=("l2",),
    budget=10_000,
)
class SimBAAttack(Attack[SimBAConfig]):
    """SimBA-DCT: step −α along a random low-frequency DCT direction; if the loss does not
    drop, step +α; keep what lowers it. Directions are orthonormal and never repeated until
    the low-frequency block is used up (then a fresh random order).

    Paper: Guo, Gardner, You, Wilson, Weinberger, "Simple Black-box Adversarial Attacks",
    ICML 2019 (arXiv:1905.07121), Alg. 1 with the DCT basis.
    Threat model: full scores (``Scores`` view). Norm: L2 (steps that would leave the ball
    are shrunk onto it).
    Query cost per step: 1 or 2 (the −α trial, then +α if needed), + 1 success check of
    the 8-bit iterate when a trial reaches the goal. Also: 1 clean query, 1 final check.
    """

    config_class = SimBAConfig

    def _loss(self, obs: ScoresObservation, state: AttackState, rows: IntArray) -> Any:
        return score_loss(obs, state.target[rows], state.orig[rows], self.config.loss)

    def init(self, oracle: Oracle, state: AttackState, start: FloatArray | None) -> None:
        n, (ch, h, w) = len(state.x), state.x.shape[1:]
        rows = np.arange(n)
        obs = self.scores(self.clean_query(oracle, state))
        state.loss[:] = self._loss(obs, state, rows)
        fh = max(1, round(h * self.config.freq_ratio))
        fw = max(1, round(w * self.config.freq_ratio))
        rng = Streams(state.seeds)
        state.own = SimBAState(
            rng=rng,
            order=rng.permutation(rows, ch * fh * fw),
            pos=np.zeros(n, np.int64),
            fh=fh,
            fw=fw,
            bh=_dct_basis(h),
            bw=_dct_basis(w),
        )
        state.lr[:] = self.config.step

    def _directions(self, state: AttackState, rows: IntArray) -> FloatArray:
        """Each row's next DCT direction (unit L2 norm), as an image."""
        own = self.own(state, SimBAState)
        fh, fw, order, pos = own.fh, own.fw, own.order, own.pos
        used = rows[pos[rows] >= order.shape[1]]
        if len(used):  # block exhausted: a fresh random order
            order[used] = own.rng.permutation(used, order.shape[1])
            pos[used] = 0
        k = order[rows, pos[rows]]
        pos[rows] += 1
        c, u, v = k // (fh * fw), (k // fw) % fh, k % fw
        img = own.bh[u][:, :, None] * own.bw[v][:, None, :]
        out = np.zeros((len(rows), *state.x.shape[1:]), np.float32)
        out[np.arange(len(rows)), c] = img
        return out

    def step(self, oracle: Oracle, state: AttackState) -> None:
        rows = self.affordable_rows(oracle, state, 3)
        if not len(rows):
            return
        q = self._directions(state, rows) * np.float32(self.config.step)
        improved = np.zeros(len(rows), bool)
        hit = np.zeros(len(rows), bool)
        for sign in (-1.0, 1.0):
            todo = np.flatnonzero(~improved)
            if not len(todo):
                break
            r = rows[todo]
            cand = state.ball.project(
                state.x[r] + np.float32(sign) * q[todo], state.x0[r], state.eps[r], oracle.bounds
            )
            obs = self.query_scores(oracle, cand, state.ids[r], QueryKind.LINE_SEARCH)
            loss = self._loss(obs, state, r)
            better = loss < state.loss[r]
            keep = todo[better]
            state.x[rows[keep]] = cand[better]
            state.loss[rows[keep]] = loss[better]
            # The target's rank and score follow the kept iterate, as its loss does.
            self.record(obs, state, r, better)
            improved[keep] = True
            hit[keep] = self.goal_hit(state, obs, r)[better]
        moved = rows[improved]
        state.xq[moved] = self.quantized(state, moved, state.x[moved], state.eps[moved])
        # A trial that reached the goal is checked as the 8-bit image that would be saved.
        self._check(oracle, state, rows[hit])

    def _check(self, oracle: Oracle, state: AttackState, rows: IntArray) -> None:
        if not len(rows):
            return
        obs = self.query_scores(oracle, state.xq[rows], state.ids[rows], QueryKind.SUCCESS_CHECK)
        hit = self.goal_hit(state, obs, rows)
        self.mark_success(oracle, state, rows, hit)
