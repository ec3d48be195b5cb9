"""PI-Square: the paper's partial-information outer loop (start in the target class, shrink
the L∞ ball around the source) with Square Attack's random search inside it instead of NES."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from ...oracle import Oracle, QueryKind
from .._losses import visible_margin
from .._plain import PlainState
from .._rand import Streams
from .._start import check_start, find_start_images
from .._windows import paper_p, positions, side, window_mask
from ..base import Attack, AttackConfig, AttackState, BoolArray, FloatArray, IntArray
from ..registry import register
from ..score.ql import ILYAS_2018

__all__ = ["PISquareAttack", "PISquareConfig"]

_LEVELS = 255  # radii live on the 8-bit grid: level k is an L∞ radius of k/255
_START, _RUN = 0, 1  # phases: binary search for the start radius; shrink and repair
_SHRINK, _REPAIR = 0, 1  # what a run step proposes


class PISquareConfig(AttackConfig):
    """Defaults: measured on EfficientNet-Lite0 (top-1 + score, ε = 0.05, 6k budget): ε steps
    of 4 levels, at most 16, beat 16 and 64 (coffee → tripod stalls at 0.090 vs 0.094;
    motorcycle → crossword succeeds at 602 queries, where 16/64 stalled at 0.059)."""

    p_init: float = Field(0.05, gt=0.0, le=1.0, description="initial window: fraction of pixels")
    delta: int = Field(4, ge=1, le=255, description="first ε step, in 8-bit levels")
    max_delta: int = Field(16, ge=1, le=255, description="largest ε step, in 8-bit levels")
    patience: int = Field(10, ge=1, description="repair steps before a shrink is tried again")
    shrink_margin: float = Field(
        0.0, description="try a shrink at once when log p(target) - log p(best other) exceeds this"
    )


@dataclass
class PISquareState(PlainState):
    """PI-Square's own state, one row per image (radii in 1/255 levels)."""

    rng: Streams
    phase: IntArray  # _START: the radius search; _RUN: repairs and shrinks
    level: IntArray  # the iterate's radius
    k_eps: IntArray  # ε
    lo: IntArray  # the start search's bounds
    hi: IntArray
    delta: IntArray  # the next shrink's size
    since: IntArray  # repairs since the last shrink try
    margin: NDArray[np.float64]  # the iterate's visible margin
    repairs: IntArray  # the window schedule's clock
    start: FloatArray  # each image's start image
    n_iters: IntArray  # the window schedule's length


@register(
    "pi-square",
    rank=80,
    paper=ILYAS_2018,
    views=("topk", "scores"),
    norms=("linf",),
    untargeted=False,
    needs_start=True,
    budget=20_000,
    default_for=("pi",),
)
class PISquareAttack(Attack[PISquareConfig]):
    """PI-Square: start from an image of the target class and shrink the L∞ ball around the
    source until it reaches ε, keeping the target visible all the way.

    Our attack, built on the outer loop of Ilyas, Engstrom, Athalye, Lin, ICML 2018
    (arXiv:1804.08598, Alg. 2) with Square Attack's random search (Andriushchenko et al., ECCV
    2020, arXiv:1912.00049) in place of NES:

    1. a binary search over the radius, on the start image projected into the ball around the
       source, finds the smallest radius at which the target is still seen (8-bit levels);
    2. then each step either tries a shrink (project the iterate into a ball ``delta`` levels
       smaller; kept when the target stays in view, and ``delta`` grows; halved otherwise) or,
       after a failed shrink, a repair: one Square window at the ball's vertices, kept when
       the visible margin of the target (``visible_margin``) grows. A shrink is tried again
       after ``patience`` repairs, or as soon as the margin exceeds ``shrink_margin``.

    Threat model: the top-k labels with scores (``TopK(k)``, k = 1 included: the target's own
    probability bounds every unseen class). Targeted. Norm: L∞.
    Query cost per step: 1 per image (a radius probe, a shrink or a repair; the radius
    probes find the start, so they count as ``init``, the others as ``line_search``). Also: 1 clean
    query, the start image's check (or the bundled-photo search), 1 final check. Every query
    is the 8-bit image inside its own radius, so the saved image is the one that was seen.
    """

    config_class = PISquareConfig

    def init_queries(self, start_given: bool) -> int:
        return 2 if start_given else 1

    def init(self, oracle: Oracle, state: AttackState, start: FloatArray | None) -> None:
        self.clean_query(oracle, state)
        state.own = self.prepare(oracle, state)
        need = np.flatnonzero(state.active)
        if not len(need):
            return
        starts = (
            find_start_images(self, oracle, state, need)
            if start is None
            else check_start(self, oracle, state, need, start[need])
        )
        self.begin(state, need, starts)

    def prepare(self, oracle: Oracle, state: AttackState) -> PISquareState:
        """PI-Square's own state for every row (no queries). An attack that hands rows over
        to PI-Square holds this state for them, then calls :meth:`begin` with start images
        the oracle has shown in the target class (or :meth:`adopt`)."""
        n = len(state.x)
        k_eps = np.floor(state.eps.astype(np.float64) * _LEVELS + 1e-6).astype(np.int64)
        return PISquareState(
            rng=Streams(state.seeds),
            phase=np.full(n, _START, np.int64),
            level=np.full(n, _LEVELS, np.int64),
            k_eps=k_eps,
            lo=k_eps - 1,  # the start search: below ε nothing more is needed
            hi=np.full(n, _LEVELS, np.int64),
            delta=np.full(n, self.config.delta, np.int64),
            since=np.zeros(n, np.int64),
            margin=np.full(n, -np.inf),
            repairs=np.zeros(n, np.int64),
            start=np.zeros_like(state.x),
            n_iters=np.full(n, oracle.max_queries or self.config.max_steps or 20_000, np.int64),
        )

    def begin(self, state: AttackState, need: IntArray, starts: FloatArray) -> None:
        """Start ``need`` from ``starts`` (seen in the target class): the radius search runs
        between ε and the start's distance from the source."""
        own = self.own(state, PISquareState)
        own.start[need] = starts
        dist = np.abs(starts.astype(np.float64) - state.x0[need]).reshape(len(need), -1).max(1)
        own.hi[need] = own.level[need] = np.ceil(dist * _LEVELS - 1e-6).astype(np.int64)
        state.x[need] = state.xq[need] = self._inside(state, need, starts, own.level[need])
        state.eps[need] = own.level[need] / _LEVELS
        # A start already inside ε needs no search (its repairs then seek the top-1).
        own.phase[need] = np.where(own.hi[need] - own.lo[need] <= 1, _RUN, _START)

    def adopt(
        self, state: AttackState, rows: IntArray, level: IntArray, margin: NDArray[np.float64]
    ) -> None:
        """Go on from the current 8-bit iterates of ``rows``, which the oracle showed in the
        target class at radius ``level`` with ``margin``: no radius search; repairs first."""
        own = self.own(state, PISquareState)
        own.phase[rows] = _RUN
        own.hi[rows] = level
        own.since[rows] = 0
        _keep(state, rows, state.xq[rows], level, margin)

    def _inside(
        self, state: AttackState, rows: IntArray, x: FloatArray, level: IntArray
    ) -> FloatArray:
        """``x`` projected into the ball of ``level`` around the source, on the 8-bit grid."""
        r = level.astype(np.float32) / _LEVELS
        return self.quantized(state, rows, state.ball.project(x, state.x0[rows], r), r)

    # -- step

    def step(self, oracle: Oracle, state: AttackState) -> None:
        rows = self.affordable_rows(oracle, state, 1)
        if not len(rows):
            return
        own = self.own(state, PISquareState)
        start = own.phase[rows] == _START
        m = own.margin[rows]
        shrink = ~start & (
            (own.since[rows] >= self.config.patience) | (m > self.config.shrink_margin)
        )
        shrink &= own.level[rows] > own.k_eps[rows]
        repair = ~start & ~shrink
        level = own.level[rows].copy()
        cand = np.empty_like(state.x[rows])
        if start.any():  # a radius probe on the projected start image
            j = np.flatnonzero(start)
            r = rows[j]
            level[j] = (own.lo[r] + own.hi[r]) // 2
            cand[j] = self._inside(state, r, own.start[r], level[j])
        if shrink.any():
            j = np.flatnonzero(shrink)
            r = rows[j]
            level[j] = np.maximum(own.level[r] - own.delta[r], own.k_eps[r])
            cand[j] = self._inside(state, r, state.x[r], level[j])
        if repair.any():
            j = np.flatnonzero(repair)
            cand[j] = self._window(state, rows[j])
        kinds = np.where(start, 0, 1)
        obs_margin, hit = self._ask(oracle, state, rows, cand, kinds)
        seen = np.isfinite(obs_margin)
        self._after_start(
            state, rows[start], level[start], seen[start], cand[start], obs_margin[start]
        )
        self._after_shrink(
            state, rows[shrink], level[shrink], seen[shrink], cand[shrink], obs_margin[shrink]
        )
        better = repair & seen & (obs_margin > m)
        b = rows[better]
        state.x[b] = state.xq[b] = cand[better]
        own.margin[b] = obs_margin[better]
        own.since[rows[repair]] += 1
        own.repairs[rows[repair]] += 1
        state.loss[rows] = -own.margin[rows]
        # Success: the goal held on a candidate inside ε. Probes and shrinks that showed the
        # target were kept above; a repair window that won is kept whatever its margin.
        won = hit & (level <= own.k_eps[rows])
        w = won & repair & ~better
        state.x[rows[w]] = state.xq[rows[w]] = cand[w]
        self.mark_success(oracle, state, rows, won)

    def _ask(
        self,
        oracle: Oracle,
        state: AttackState,
        rows: IntArray,
        cand: FloatArray,
        kinds: IntArray,
    ) -> tuple[NDArray[np.float64], BoolArray]:
        """Query ``cand`` (one oracle call per query kind); the target's visible margin and
        whether the goal holds, per row."""
        margin = np.full(len(rows), -np.inf)
        hit = np.zeros(len(rows), bool)
        for code, kind in ((0, QueryKind.INIT), (1, QueryKind.LINE_SEARCH)):
            sel = kinds == code
            if not sel.any():
                continue
            r = rows[sel]
            obs = oracle.query(cand[sel], state.ids[r], kind)
            margin[sel] = visible_margin(obs, state.target[r])
            hit[sel] = self.goal_hit(state, obs, r)
            self.record(obs, state, r)
        return margin, hit

    def _after_start(
        self,
        state: AttackState,
        rows: IntArray,
        level: IntArray,
        seen: BoolArray,
        cand: FloatArray,
        margin: NDArray[np.float64],
    ) -> None:
        own = self.own(state, PISquareState)
        own.hi[rows] = np.where(seen, level, own.hi[rows])
        own.lo[rows] = np.where(seen, own.lo[rows], level)
        _keep(state, rows[seen], cand[seen], level[seen], margin[seen])
        ended = rows[own.hi[rows] - own.lo[rows] <= 1]
        own.phase[ended] = _RUN
        own.since[ended] = 0

    def _after_shrink(
        self,
        state: AttackState,
        rows: IntArray,
        level: IntArray,
        seen: BoolArray,
        cand: FloatArray,
        margin: NDArray[np.float64],
    ) -> None:
        own = self.own(state, PISquareState)
        keep, fail = rows[seen], rows[~seen]
        _keep(state, keep, cand[seen], level[seen], margin[seen])
        own.delta[keep] = np.minimum(own.delta[keep] * 2, self.config.max_delta)
        own.delta[fail] = np.maximum(own.delta[fail] // 2, 1)
        own.since[rows] = 0

    def _window(self, state: AttackState, rows: IntArray) -> FloatArray:
        """One Square window per row, every channel at a random vertex of the current ball."""
        own = self.own(state, PISquareState)
        rng = own.rng
        ch, h, w = state.x.shape[1:]
        p = paper_p(self.config.p_init, own.repairs[rows], own.n_iters[rows])
        s = side(p, h, w)
        rc = positions(rng, rows, s, h, w)
        up = rng.signs(rows, ch) > 0
        b, _, i, j = np.nonzero(window_mask(rc[:, 0], rc[:, 1], s, h, w))
        r = own.level[rows].astype(np.float32) / _LEVELS
        x0 = state.x0[rows]
        vertex = np.where(up[b], x0[b, :, i, j] + r[b, None], x0[b, :, i, j] - r[b, None])
        cand = state.x[rows]
        cand[b, :, i, j] = vertex
        return self._inside(state, rows, cand, own.level[rows])


def _keep(
    state: AttackState,
    rows: IntArray,
    x: FloatArray,
    level: IntArray,
    margin: NDArray[np.float64],
) -> None:
    """Make ``x`` (seen at radius ``level``, with ``margin``) the iterate of ``rows``."""
    own = Attack.own(state, PISquareState)
    state.x[rows] = state.xq[rows] = x
    own.level[rows] = level
    own.margin[rows] = margin
    state.eps[rows] = level / _LEVELS
