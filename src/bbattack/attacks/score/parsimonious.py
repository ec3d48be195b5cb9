"""Parsimonious attack (Moon, An, Song, ICML 2019): L∞ black-box attack as combinatorial
optimisation over the vertices of the ball, written from the paper."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from ...oracle import Oracle, QueryKind, ScoresObservation
from .._losses import Loss, goal_loss
from .._plain import PlainState
from .._rand import Streams
from .._windows import window_mask
from ..base import Attack, AttackConfig, AttackState, BoolArray, FloatArray, IntArray
from ..registry import Paper, register

__all__ = [
    "PARSIMONIOUS_2019",
    "ParsimoniousAttack",
    "ParsimoniousConfig",
    "ParsimoniousState",
]

PARSIMONIOUS_2019 = Paper(
    title="Parsimonious Black-Box Adversarial Attacks via Efficient Combinatorial Optimization",
    authors="Moon, An, Song",
    venue="ICML 2019",
    arxiv="1905.06635",
)

_EVAL, _GREEDY = 0, 1  # phases of a mini-batch: score every flip, then lazy greedy
_CHUNK = 512  # candidate images per oracle call in the scoring phase (memory, not results)


class ParsimoniousConfig(AttackConfig):
    """Defaults: the paper's ImageNet settings (initial block 16, mini-batch 64, block size
    halved after each pass over the blocks)."""

    block_size: int = Field(16, ge=1, description="initial block side in pixels")
    min_block_size: int = Field(1, ge=1, description="the hierarchy stops halving here")
    batch_size: int = Field(64, ge=1, description="blocks per lazy-greedy mini-batch")
    targeted_loss: Loss = Field("margin", description="targeted loss on log-probabilities")
    untargeted_loss: Loss = Field("margin", description="untargeted loss")


@dataclass
class ParsimoniousState(PlainState):
    """Parsimonious' own state: the vertex each pixel sits at, and the block hierarchy."""

    rng: Streams
    hi: FloatArray  # x0 + ε and x0 − ε as 8-bit images: the two vertices of every pixel
    lo: FloatArray
    up: BoolArray  # True: the pixel sits at +ε
    block: IntArray  # the current block side
    order: NDArray[np.int32]  # this pass's block order
    pos: IntArray  # next unread place in ``order``
    batch: IntArray  # (N, batch_size): the mini-batch's blocks, -1 past the end
    gain: NDArray[np.float64]  # their stale marginal gains (inf: unscored)
    phase: IntArray  # _EVAL or _GREEDY


@register(
    "parsimonious",
    rank=50,
    paper=PARSIMONIOUS_2019,
    views=("scores",),
    norms=("linf",),
    budget=10_000,
)
class ParsimoniousAttack(Attack[ParsimoniousConfig]):
    """Parsimonious: every pixel sits at a vertex x0 ± ε; blocks (one channel, bs×bs pixels)
    are flipped between the two by lazy greedy local search over random mini-batches, and the
    blocks are split in four after each pass (the block hierarchy).

    Paper: Moon, An, Song, "Parsimonious Black-Box Adversarial Attacks via Efficient
    Combinatorial Optimization", ICML 2019 (arXiv:1905.06635), Alg. 1-3. The paper alternates
    an insertion and a deletion sweep per mini-batch; here one lazy-greedy sweep considers
    every flip of the batch, which is both at once.
    Threat model: full scores (``Scores`` view). Norm: L∞ only.
    Query cost per step: a mini-batch opens with one query per block (the marginal gains),
    then 1 per lazy-greedy re-evaluation. Also: 1 clean, 1 start (all −ε), 1 final check.
    Every query is an 8-bit vertex image inside the ball, and its answer is the success check.
    """

    config_class = ParsimoniousConfig

    def init_queries(self, start_given: bool) -> int:
        return 2

    def _loss(self, obs: ScoresObservation, state: AttackState, rows: IntArray) -> Any:
        cfg = self.config
        t, o = state.target[rows], state.orig[rows]
        return goal_loss(obs, t, o, cfg.targeted_loss, cfg.untargeted_loss)

    def init(self, oracle: Oracle, state: AttackState, start: FloatArray | None) -> None:
        n, (ch, h, w) = len(state.x), state.x.shape[1:]
        rows = np.arange(n)
        self.clean_query(oracle, state)
        e = state.eps[:, None, None, None]
        b = self.config.batch_size
        own = state.own = ParsimoniousState(
            rng=Streams(state.seeds),
            hi=self.quantized(state, rows, state.x0 + e, state.eps),
            lo=self.quantized(state, rows, state.x0 - e, state.eps),
            up=np.zeros((n, ch, h, w), bool),
            block=np.full(n, min(self.config.block_size, h, w), np.int64),
            order=np.zeros((n, ch * h * w), np.int32),
            pos=np.zeros(n, np.int64),
            batch=np.full((n, b), -1, np.int64),
            gain=np.full((n, b), -np.inf),
            phase=np.full(n, _EVAL, np.int64),
        )
        self._new_pass(state, rows)
        self._next_batch(state, rows)
        live = np.flatnonzero(state.active)
        if not len(live):
            return
        x = own.lo[live]
        obs = self.query_scores(oracle, x, state.ids[live], QueryKind.INIT)
        state.x[live] = state.xq[live] = x
        state.loss[live] = self._loss(obs, state, live)
        self.record(obs, state, live)
        self.mark_success(oracle, state, live, self.goal_hit(state, obs, live))

    # -- the block hierarchy and its mini-batches

    def _count(self, state: AttackState, bs: IntArray) -> IntArray:
        """Blocks per image at block side ``bs`` (per row)."""
        ch, h, w = state.x.shape[1:]
        return np.asarray(ch * (-(-h // bs)) * (-(-w // bs)), np.int64)

    def _new_pass(self, state: AttackState, rows: IntArray) -> None:
        own = self.own(state, ParsimoniousState)
        for bs in np.unique(own.block[rows]):  # at most log2(block_size) + 1 groups
            g = rows[own.block[rows] == bs]
            nb = int(self._count(state, np.asarray([bs]))[0])
            own.order[g, :nb] = own.rng.permutation(g, nb)
            own.pos[g] = 0

    def _next_batch(self, state: AttackState, rows: IntArray) -> None:
        """Load the next mini-batch; after the last one, halve the blocks and start a pass."""
        own = self.own(state, ParsimoniousState)
        done = own.pos[rows] >= self._count(state, own.block[rows])
        if done.any():
            d = rows[done]
            own.block[d] = np.maximum(own.block[d] // 2, self.config.min_block_size)
            self._new_pass(state, d)
        nb = self._count(state, own.block[rows])
        b = self.config.batch_size
        idx = own.pos[rows, None] + np.arange(b)[None, :]
        valid = idx < nb[:, None]
        take = np.take_along_axis(own.order[rows], np.minimum(idx, nb[:, None] - 1), axis=1)
        own.batch[rows] = np.where(valid, take, -1)
        own.gain[rows] = np.where(valid, np.inf, -np.inf)  # unscored
        own.pos[rows] += b
        own.phase[rows] = _EVAL

    def _flip(self, state: AttackState, rows: IntArray, var: IntArray) -> BoolArray:
        """(m, C, H, W): the sign map of each row with its block ``var`` flipped."""
        ch, h, w = state.x.shape[1:]
        own = self.own(state, ParsimoniousState)
        bs = own.block[rows]
        nbh, nbw = -(-h // bs), -(-w // bs)
        c, r, q = var // (nbh * nbw), (var // nbw) % nbh, var % nbw
        inside = window_mask(r * bs, q * bs, bs, h, w)
        chan = (np.arange(ch)[None, :] == c[:, None])[:, :, None, None]
        up: BoolArray = own.up[rows]
        return np.asarray(up ^ (inside & chan))

    def _image(self, state: AttackState, rows: IntArray, up: BoolArray) -> FloatArray:
        own = self.own(state, ParsimoniousState)
        x: FloatArray = np.where(up, own.hi[rows], own.lo[rows]).astype(np.float32)
        return x

    # -- step

    def step(self, oracle: Oracle, state: AttackState) -> None:
        own = self.own(state, ParsimoniousState)
        rows = np.flatnonzero(state.active)
        ev = rows[own.phase[rows] == _EVAL]
        gr = rows[own.phase[rows] == _GREEDY]
        sizes = (own.batch[ev] >= 0).sum(axis=1)
        for size in np.unique(sizes):  # only the last batch of a pass is shorter
            g = ev[sizes == size]
            self._score(oracle, state, self._payable(oracle, state, g, int(size)))
        self._greedy(oracle, state, self._payable(oracle, state, gr, 1))
        live = np.flatnonzero(state.active)
        live = live[own.phase[live] == _GREEDY]
        # A mini-batch with no flip left to gain is over: the next one opens at once, so that
        # every step spends a query.
        self._next_batch(state, live[(own.gain[live] <= 0).all(axis=1)])

    def _payable(self, oracle: Oracle, state: AttackState, rows: IntArray, cost: int) -> IntArray:
        """The ``rows`` that can pay ``cost``; the rest stop (budget)."""
        ok = self.can_pay(oracle, state, rows, cost)
        self.stop(state, rows[~ok], "budget")
        return rows[ok]

    def _score(self, oracle: Oracle, state: AttackState, rows: IntArray) -> None:
        """One query per block of the mini-batch: the marginal gain of flipping it."""
        own = self.own(state, ParsimoniousState)
        per = max(1, _CHUNK // self.config.batch_size)
        for k in range(0, len(rows), per):  # memory chunks; each is vectorised
            g = rows[k : k + per]
            valid = own.batch[g] >= 0
            r, j = np.nonzero(valid)
            up = self._flip(state, g[r], own.batch[g][r, j])
            obs = self.query_scores(
                oracle, self._image(state, g[r], up), state.ids[g[r]], QueryKind.LINE_SEARCH
            )
            loss = self._loss(obs, state, g[r])
            gain = np.full(valid.shape, -np.inf)
            gain[r, j] = state.loss[g[r]] - loss
            hits = np.zeros(valid.shape, bool)
            hits[r, j] = self.goal_hit(state, obs, g[r])
            # The first candidate that reaches the goal is the result.
            won: BoolArray = np.asarray(hits.any(axis=1))
            at = np.full(valid.shape, -1)
            at[r, j] = np.arange(len(r))
            first = at[np.flatnonzero(won), hits[won].argmax(axis=1)]
            self._accept(state, g[won], up[first], loss[first], obs, first)
            own.gain[g] = gain
            own.phase[g] = _GREEDY
            self.mark_success(oracle, state, g, won)

    def _greedy(self, oracle: Oracle, state: AttackState, rows: IntArray) -> None:
        """Lazy greedy: re-score the block with the best stale gain; flip it if it still beats
        every other stale gain (gains only shrink as blocks are flipped, so it is the best)."""
        if not len(rows):
            return
        own = self.own(state, ParsimoniousState)
        gain = own.gain[rows]
        j = gain.argmax(axis=1)
        var = own.batch[rows, j]
        up = self._flip(state, rows, var)
        obs = self.query_scores(
            oracle, self._image(state, rows, up), state.ids[rows], QueryKind.LINE_SEARCH
        )
        loss = self._loss(obs, state, rows)
        new = state.loss[rows] - loss
        others = gain.copy()
        others[np.arange(len(rows)), j] = -np.inf
        hit = self.goal_hit(state, obs, rows)
        take = hit | ((new > 0) & (new >= others.max(axis=1)))
        # A taken block leaves the batch; an untaken one keeps its fresh gain.
        own.gain[rows, j] = np.where(take, -np.inf, new)
        self._accept(state, rows[take], up[take], loss[take], obs, np.flatnonzero(take))
        self.mark_success(oracle, state, rows, hit)

    def _accept(
        self,
        state: AttackState,
        rows: IntArray,
        up: BoolArray,
        loss: NDArray[np.float64],
        obs: ScoresObservation,
        at: IntArray,
    ) -> None:
        self.own(state, ParsimoniousState).up[rows] = up
        state.x[rows] = state.xq[rows] = self._image(state, rows, up)
        state.loss[rows] = loss
        self.record(ScoresObservation(obs.probs[at]), state, rows)
