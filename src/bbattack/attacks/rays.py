"""RayS (Chen and Gu, KDD 2020): a hard-label, untargeted L∞ attack that searches over ray
directions instead of gradients, written from the paper."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from ..oracle import Oracle, QueryKind
from .base import Attack, AttackConfig, AttackState, BoolArray, FloatArray, IntArray
from .registry import Paper, register

__all__ = ["RAYS_2020", "RaySAttack", "RaySConfig"]

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


@register(
    "rays",
    rank=70,
    paper=RAYS_2020,
    views=("labels", "topk", "scores"),
    norms=("linf",),
    targeted=False,
    budget=10_000,
    default_for=("lo", "pi"),  # untargeted: PI and LO are targeted
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
        n = len(state.x)
        rows = np.arange(n)
        obs = oracle.query(state.x0, state.ids, QueryKind.INIT)
        state.orig[:] = obs.top1()
        self.mark_success(oracle, state, rows, self.goal_hit(state, obs, rows))
        self.prepare(state)

    def prepare(self, state: AttackState, d: NDArray[np.int8] | None = None) -> None:
        """RayS's own state (no queries), starting from the sign vector ``d`` (N, dim) where
        given (a surrogate's direction), else from all +1 as in the paper."""
        n = len(state.x)
        dim = int(np.prod(state.x.shape[1:]))
        state.extra.update(
            d=np.ones((n, dim), np.int8) if d is None else d.astype(np.int8),  # the best ray
            r=np.full(n, _INF, np.int64),  # its radius in levels
            k_eps=np.floor(state.eps.astype(np.float64) * _LEVELS + 1e-6).astype(np.int64),
            stage=np.zeros(n, np.int64),
            block=np.full(n, -1, np.int64),  # -1: the first ray, d itself, unflipped
            phase=np.full(n, _CHECK, np.int64),
            lo=np.zeros(n, np.int64),
            hi=np.zeros(n, np.int64),
            moved=np.zeros(n, bool),  # the best ray already is this search's flipped ray
            max_stage=int(np.ceil(np.log2(dim))),
        )
        state.eps[:] = 1.0  # the current radius: no adversarial ray yet

    # -- rays and blocks

    def _span(self, state: AttackState, rows: IntArray) -> tuple[IntArray, IntArray]:
        """[start, end) of each row's current block in the flattened sign vector."""
        ex = state.extra
        dim = ex["d"].shape[1]
        size = -(-dim // (1 << ex["stage"][rows]))
        b = ex["block"][rows]
        start = np.where(b < 0, 0, b * size)
        end = np.where(b < 0, 0, np.minimum(dim, (b + 1) * size))
        return start, end

    def _candidate_rays(self, state: AttackState, rows: IntArray) -> NDArray[np.int8]:
        start, end = self._span(state, rows)
        idx = np.arange(state.extra["d"].shape[1])
        keep = state.extra["moved"][rows][:, None]
        flip = (idx >= start[:, None]) & (idx < end[:, None]) & ~keep
        d = state.extra["d"][rows]
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
        ex = state.extra
        dim = ex["d"].shape[1]
        b = ex["block"][rows] + 1
        size = -(-dim // (1 << ex["stage"][rows]))
        done = (b >= (1 << ex["stage"][rows])) | (b * size >= dim)
        ex["stage"][rows] = np.where(
            done, np.minimum(ex["stage"][rows] + 1, ex["max_stage"]), ex["stage"][rows]
        )
        ex["block"][rows] = np.where(done, 0, b)

    # -- step

    def step(self, oracle: Oracle, state: AttackState) -> None:
        rows = self.affordable_rows(oracle, state, 1)
        if not len(rows):
            return
        ex = state.extra
        check = ex["phase"][rows] == _CHECK
        mid = (ex["lo"][rows] + ex["hi"][rows]) // 2
        level = np.where(check, np.minimum(ex["r"][rows], _LEVELS), mid)
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
        ex = state.extra
        k_eps = ex["k_eps"][rows]
        # A ray that passes its check is searched on (ε − 1 level, level]; one that fails is
        # dropped. A probe lowers hi when adversarial, raises lo otherwise.
        lo = np.where(check, k_eps - 1, np.where(adv, ex["lo"][rows], level))
        hi = np.where(adv, level, ex["hi"][rows])
        searching = (check & adv) | ~check
        ex["lo"][rows], ex["hi"][rows] = lo, hi
        # An adversarial probe is the best image so far when it beats the best radius.
        better = adv & (level < ex["r"][rows])
        b = rows[better]
        state.xq[b] = state.x[b] = x[better]
        state.eps[b] = level[better].astype(np.float32) / _LEVELS
        ex["d"][b] = rays[better]
        ex["r"][b] = level[better]
        ex["moved"][b] = True
        self.mark_success(oracle, state, rows, adv & (level <= k_eps))
        # The search ends at the tolerance; a failed check ends at once. Either way the next
        # step checks the next block against the (possibly new) best ray.
        ended = ~searching | (searching & (hi - lo <= self.config.tol))
        ex["phase"][rows] = np.where(ended, _CHECK, _SEARCH)
        ex["moved"][rows[ended]] = False
        self._next_block(state, rows[ended])
