"""RayS (Chen and Gu, KDD 2020): a hard-label, untargeted L∞ attack that searches over ray
directions instead of gradients, written from the paper."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from ...oracle import Oracle, QueryKind
from .._plain import PlainState
from ..base import Attack, AttackConfig, AttackState, BoolArray, FloatArray, IntArray
from ..registry import Paper, register

__all__ = ["RAYS_2020", "RaySAttack", "RaySConfig", "RaySState"]

RAYS_2020 = Paper(
    title="RayS: A Ray Searching Method for Hard-label Adversarial Attack",
    authors="Chen, Gu",
    venue="KDD 2020",
    arxiv="2006.12792",
)

_LEVELS = 255  # radii are searched on the 8-bit grid: level k is an L∞ radius of k/255
_INF = _LEVELS + 1  # no adversarial ray found yet
_CHECK, _SEARCH = 0, 1  # phases: check a flipped ray at the best radius; binary search on it


class RaySConfig(AttackConfig):
    """Defaults: the paper's hierarchy (the sign vector cut into 2^s contiguous blocks at
    stage s) and a binary search down to one 8-bit level."""

    tol: int = Field(1, ge=1, le=64, description="binary search stops at this gap (8-bit levels)")


@dataclass
class RaySState(PlainState):
    """RayS's own state (row i = image i); radii are in 8-bit levels."""

    d: NDArray[np.int8]  # the best ray so far, a sign vector (N, dim)
    r: IntArray  # its radius; _INF: no adversarial ray yet
    k_eps: IntArray  # ε: a probe at or below it is a success
    stage: IntArray  # the hierarchy's stage: 2^stage blocks
    block: IntArray  # the block flipped now; -1: the first ray, d itself, unflipped
    phase: IntArray  # _CHECK or _SEARCH
    lo: IntArray  # the binary search's bracket (lo, hi]
    hi: IntArray
    moved: BoolArray  # the best ray already is this search's flipped ray
    max_stage: int  # the finest stage (blocks of one entry); it repeats


@register(
    "rays",
    rank=70,
    paper=RAYS_2020,
    views=("labels", "topk", "scores"),
    norms=("linf",),
    targeted=False,
    budget=10_000,
    default_for=("lo",),  # untargeted label-only; under PI square-topk comes first
)
class RaySAttack(Attack[RaySConfig]):
    """RayS: the adversarial image is x0 + r·d clipped to the image range, for a sign vector d
    and the smallest radius r at which the label changes. Starting from d = +1, the blocks of
    a hierarchy (halves, quarters, ...) are flipped one at a time; a flip is kept when the ray
    it gives is adversarial at a smaller radius. A flipped ray is first checked at the best
    radius so far (one query: most flips are dropped there), and only a ray that passes is
    binary-searched. The attack succeeds as soon as an adversarial image lies inside the ε-ball.

    Paper: Chen, Gu, "RayS: A Ray Searching Method for Hard-label Adversarial Attack", KDD 2020
    (arXiv:2006.12792), Alg. 1-3.
    Threat model: label-only (the top-1 label; any view works), untargeted. Norm: L∞.
    Query cost per step: 1 per image (a ray check or one binary-search probe). Also: 1 clean
    image, 1 final check. Radii live on the 8-bit grid (level k = k/255) and every probe is
    the 8-bit image inside its own radius, so the saved image is the one that was seen. The
    binary search never goes below ε (level ⌊255ε⌋): a smaller radius would not change the
    outcome, and each probe at ε is the success check.
    """

    config_class = RaySConfig

    def init(self, oracle: Oracle, state: AttackState, start: FloatArray | None) -> None:
        self.clean_query(oracle, state)
        state.own = self.prepare(state)
        state.eps[:] = 1.0  # the current radius: no adversarial ray yet

    def prepare(self, state: AttackState, d: NDArray[np.int8] | None = None) -> RaySState:
        """RayS's own state for every row of ``state`` (no queries; ``state`` is left as it
        is), starting from the sign vector ``d`` (N, dim) where given (a surrogate's
        direction), else from all +1 as in the paper. ε is read from ``state.eps`` now."""
        n = len(state.x)
        dim = int(np.prod(state.x.shape[1:]))
        return RaySState(
            d=np.ones((n, dim), np.int8) if d is None else d.astype(np.int8),
            r=np.full(n, _INF, np.int64),
            k_eps=np.floor(state.eps.astype(np.float64) * _LEVELS + 1e-6).astype(np.int64),
            stage=np.zeros(n, np.int64),
            block=np.full(n, -1, np.int64),
            phase=np.full(n, _CHECK, np.int64),
            lo=np.zeros(n, np.int64),
            hi=np.zeros(n, np.int64),
            moved=np.zeros(n, bool),
            max_stage=int(np.ceil(np.log2(dim))),
        )

    def adopt(self, state: AttackState, rows: IntArray) -> None:
        """RayS takes over ``rows`` (``state.own`` a :class:`RaySState`) from the images in
        ``state.xq[rows]``: the ray is their signs about x0, searched afresh (the first block,
        no adversarial radius yet, so the next step checks that ray at the largest radius)."""
        own = self.own(state, RaySState)
        best = state.xq[rows]
        state.x[rows] = best
        own.d[rows] = np.where(best >= state.x0[rows], 1, -1).reshape(len(rows), -1)
        own.r[rows] = _INF
        own.stage[rows] = 0
        own.block[rows] = -1
        own.phase[rows] = _CHECK
        own.lo[rows] = own.hi[rows] = 0
        own.moved[rows] = False
        state.eps[rows] = 1.0  # no adversarial ray yet

    # -- rays and blocks

    def _span(self, state: AttackState, rows: IntArray) -> tuple[IntArray, IntArray]:
        """[start, end) of each row's current block in the flattened sign vector."""
        own = self.own(state, RaySState)
        dim = own.d.shape[1]
        size = -(-dim // (1 << own.stage[rows]))
        b = own.block[rows]
        start = np.where(b < 0, 0, b * size)
        end = np.where(b < 0, 0, np.minimum(dim, (b + 1) * size))
        return start, end

    def _candidate_rays(self, state: AttackState, rows: IntArray) -> NDArray[np.int8]:
        own = self.own(state, RaySState)
        start, end = self._span(state, rows)
        idx = np.arange(own.d.shape[1])
        keep = own.moved[rows][:, None]
        flip = (idx >= start[:, None]) & (idx < end[:, None]) & ~keep
        d = own.d[rows]
        return np.asarray(np.where(flip, -d, d), np.int8)

    def _images(
        self, state: AttackState, rows: IntArray, rays: NDArray[np.int8], level: IntArray
    ) -> FloatArray:
        r = level.astype(np.float32) / _LEVELS
        x0 = state.x0[rows]
        step = rays.reshape(x0.shape).astype(np.float32) * r[:, None, None, None]
        x = np.clip(x0 + step, 0.0, 1.0).astype(np.float32)
        return self.quantized(state, rows, x, r)

    def _next_block(self, state: AttackState, rows: IntArray) -> None:
        """Advance to the next block of the hierarchy (stage by stage, finest stage repeats)."""
        own = self.own(state, RaySState)
        dim = own.d.shape[1]
        b = own.block[rows] + 1
        size = -(-dim // (1 << own.stage[rows]))
        done = (b >= (1 << own.stage[rows])) | (b * size >= dim)
        own.stage[rows] = np.where(
            done, np.minimum(own.stage[rows] + 1, own.max_stage), own.stage[rows]
        )
        own.block[rows] = np.where(done, 0, b)

    # -- step

    def step(self, oracle: Oracle, state: AttackState) -> None:
        rows = self.affordable_rows(oracle, state, 1)
        if not len(rows):
            return
        own = self.own(state, RaySState)
        check = own.phase[rows] == _CHECK
        mid = (own.lo[rows] + own.hi[rows]) // 2
        level = np.where(check, np.minimum(own.r[rows], _LEVELS), mid)
        rays = self._candidate_rays(state, rows)
        x = self._images(state, rows, rays, level)
        kind = QueryKind.PROBE if check.all() else QueryKind.BINARY_SEARCH
        if check.any() and not check.all():  # one call per kind, so each is counted as such
            adv = np.zeros(len(rows), bool)
            for sel, k in ((check, QueryKind.PROBE), (~check, QueryKind.BINARY_SEARCH)):
                r = rows[sel]
                obs = oracle.query(x[sel], state.ids[r], k)
                adv[sel] = self.goal_hit(state, obs, r)
        else:
            obs = oracle.query(x, state.ids[rows], kind)
            adv = self.goal_hit(state, obs, rows)
        self._update(oracle, state, rows, check, level, adv, x, rays)

    def _update(
        self,
        oracle: Oracle,
        state: AttackState,
        rows: IntArray,
        check: BoolArray,
        level: IntArray,
        adv: BoolArray,
        x: FloatArray,
        rays: NDArray[np.int8],
    ) -> None:
        own = self.own(state, RaySState)
        k_eps = own.k_eps[rows]
        # A ray that passes its check is searched on (ε − 1 level, level]; one that fails is
        # dropped. A probe lowers hi when adversarial, raises lo otherwise.
        lo = np.where(check, k_eps - 1, np.where(adv, own.lo[rows], level))
        hi = np.where(adv, level, own.hi[rows])
        searching = (check & adv) | ~check
        own.lo[rows], own.hi[rows] = lo, hi
        # An adversarial probe is the best image so far when it beats the best radius.
        better = adv & (level < own.r[rows])
        b = rows[better]
        state.xq[b] = state.x[b] = x[better]
        state.eps[b] = level[better].astype(np.float32) / _LEVELS
        own.d[b] = rays[better]
        own.r[b] = level[better]
        own.moved[b] = True
        self.mark_success(oracle, state, rows, adv & (level <= k_eps))
        # The search ends at the tolerance; a failed check ends at once. Either way the next
        # step checks the next block against the (possibly new) best ray.
        ended = ~searching | (searching & (hi - lo <= self.config.tol))
        own.phase[rows] = np.where(ended, _CHECK, _SEARCH)
        own.moved[rows[ended]] = False
        self._next_block(state, rows[ended])
