"""PI and LO: the ε-shrinking attacks of Ilyas et al. (2018) for partial and label-only output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import Field

from ...oracle import Oracle, QueryKind
from .._nes import NESConfig, NESState, nes_gradient
from .._plain import PlainState
from .._start import check_start, find_start_images
from ..base import Attack, AttackState, FloatArray, IntArray
from ..registry import register
from ..score.ql import ILYAS_2018

__all__ = ["LOAttack", "LOConfig", "PIAttack", "PIConfig", "ShrinkState"]


class ShrinkConfig(NESConfig):
    """Shared by PI and LO: the ε-shrinking schedule on top of the NES settings."""

    min_lr: float = Field(1e-3, gt=0.0)
    plateau_length: int = Field(20, ge=1)
    adv_thresh: float = Field(0.2, description="shrink ε only while the NES loss is below this")
    starting_eps: float = Field(1.0, gt=0.0, le=1.0)
    starting_delta_eps: float = Field(0.5, gt=0.0)
    min_delta_eps: float = Field(0.1, gt=0.0)
    min_prop_delta_eps: float = Field(2e-3, gt=0.0)
    conservative: float = Field(2.0, ge=1.0, description="ε moves by δ/conservative on success")


class PIConfig(ShrinkConfig):
    """Defaults: paper appendix (σ, n) and the reference partial-info.sh (thresholds, lr)."""


class LOConfig(ShrinkConfig):
    """Defaults: paper appendix (σ, n, m, μ) and the reference label-only.sh (thresholds)."""

    adv_thresh: float = 0.15
    min_lr: float = Field(1e-4, gt=0.0)
    conservative: float = Field(4.0, ge=1.0)
    noise_samples: int = Field(50, ge=1, description="m: proxy-score samples per NES point")
    mu: float = Field(1e-3, gt=0.0, description="L∞ radius of the proxy-score noise")
    points_per_chunk: int = Field(2, ge=1, description="NES points evaluated per oracle batch")


@dataclass
class ShrinkState(PlainState):
    """PI's and LO's own state: NES momentum and plateau, and the ε-shrinking schedule."""

    nes: NESState
    delta_eps: NDArray[np.float64]  # the ε decrement the next shrink proposes
    stalls: IntArray  # steps whose line search found neither a smaller ε nor a step


SC = TypeVar("SC", bound=ShrinkConfig)


class _Shrinking(Attack[SC], Generic[SC]):
    """Start inside the target class, then alternate ε-shrinking and target maximisation."""

    def init_queries(self, start_given: bool) -> int:
        return 2 if start_given else 1  # the clean image, and the start image's check

    def sample_loss(
        self, oracle: Oracle, state: AttackState, pts: FloatArray, prow: IntArray
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        raise NotImplementedError

    def init(self, oracle: Oracle, state: AttackState, start: FloatArray | None) -> None:
        cfg = self.config
        n = len(state.x)
        state.own = ShrinkState(
            nes=NESState.zeros(state.x, cfg.plateau_length),
            delta_eps=np.full(n, cfg.starting_delta_eps, dtype=np.float64),
            stalls=np.zeros(n, dtype=np.int64),
        )
        self.clean_query(oracle, state)
        already = state.success.copy()  # the clean image already holds the goal
        need = np.flatnonzero(~already)
        if len(need):
            # The iterate becomes the start image: the clean image's rank is not its rank.
            state.target_rank[need] = -1
            state.target_prob[need] = np.nan
            starts = (
                find_start_images(self, oracle, state, need)
                if start is None
                else check_start(self, oracle, state, need, start[need])
            )
            box = np.full(len(need), cfg.starting_eps)
            state.x[need] = state.ball.project(starts, state.x0[need], box, oracle.bounds)
            state.xq[need] = self.quantized(state, need, state.x[need], box)
        state.eps[:] = np.where(already, cfg.eps, cfg.starting_eps)
        state.lr[:] = cfg.max_lr

    def step(self, oracle: Oracle, state: AttackState) -> None:
        cfg = self.config
        rows = self.affordable_rows(oracle, state, self.gradient_cost() + 1)
        if not len(rows):
            return

        own = self.own(state, ShrinkState)

        def sample_loss(pts: FloatArray, prow: IntArray) -> tuple[np.ndarray, np.ndarray]:
            return self.sample_loss(oracle, state, pts, prow)

        g, loss = nes_gradient(
            state, rows, cfg.sigma, cfg.samples, sample_loss, oracle.bounds, cfg.max_rows
        )
        g = own.nes.momentum(rows, g, cfg.momentum)
        state.loss[rows] = np.where(np.isfinite(loss), loss, np.nan)
        own.nes.plateau(state.lr, rows, loss, cfg.plateau_drop, cfg.min_lr)
        goal = cfg.eps
        delta_eps = own.delta_eps
        prop = np.where((loss < cfg.adv_thresh) & (state.eps[rows] > goal), delta_eps[rows], 0.0)
        lr = state.lr[rows].astype(np.float64)
        sign = np.sign(g)
        searching = np.ones(len(rows), dtype=bool)
        # Backtracking line search, vectorised: each round proposes one image per searching row.
        while searching.any():
            j = np.flatnonzero(searching)
            r = rows[j]
            can = self.can_pay(oracle, state, r, 1)
            if not can.all():
                self.stop(state, r[~can], "budget")
                searching[j[~can]] = False
                j, r = j[can], r[can]
                if not len(j):
                    break
            box = np.maximum(state.eps[r] - prop[j], goal)
            cand = state.ball.project(
                state.x[r] - (lr[j].reshape(-1, 1, 1, 1) * sign[j]).astype(np.float32),
                state.x0[r],
                box,
                oracle.bounds,
            )
            # Proposals are judged as 8-bit images: what is accepted is what can be saved.
            cq = self.quantized(state, r, cand, box)
            obs = oracle.query(cq, state.ids[r], QueryKind.LINE_SEARCH)
            ok = obs.rank_of(state.target[r]) >= 0
            acc, rej = j[ok], j[~ok]
            if len(acc):
                ra = rows[acc]
                state.x[ra] = cand[ok]
                state.xq[ra] = cq[ok]
                shrunk = prop[acc] > 0
                delta_eps[ra[shrunk]] = np.maximum(prop[acc][shrunk], cfg.min_delta_eps)
                own.nes.clear_plateau(ra[shrunk])
                state.eps[ra] = np.maximum(state.eps[ra] - prop[acc] / cfg.conservative, goal)
                self.record(obs, state, r, ok)
                searching[acc] = False
                hit = self.goal_hit(state, obs, r)[ok] & (state.eps[ra] <= goal + 1e-9)
                self.mark_success(oracle, state, ra, hit)
            if len(rej):
                halve = lr[rej] >= 2 * cfg.min_lr
                lr[rej[halve]] /= 2
                back = rej[~halve]
                has_prop = prop[back] > 0
                shrink = back[has_prop]
                prop[shrink] /= 2
                prop[shrink] = np.where(prop[shrink] < cfg.min_prop_delta_eps, 0.0, prop[shrink])
                lr[shrink] = state.lr[rows[shrink]]
                # No ε to give back and no step small enough: keep the iterate, try new noise.
                stalled = back[~has_prop]
                own.stalls[rows[stalled]] += 1
                searching[stalled] = False

    def gradient_cost(self) -> int:
        return self.config.samples


@register(
    "pi",
    rank=20,
    paper=ILYAS_2018,
    views=("topk", "scores"),
    norms=("linf",),
    untargeted=False,
    needs_start=True,
    budget=100_000,
)
class PIAttack(_Shrinking[PIConfig]):
    """Partial-information attack: top-k labels with scores.

    Paper: Ilyas, Engstrom, Athalye, Lin, ICML 2018 (arXiv:1804.08598), §2.2 / Alg. 2.
    Threat model: top-k labels and their probabilities (``TopK(k)``, k may be 1).
    Norm: L∞; ε starts at ``starting_eps`` around the source image and shrinks to ``eps``.
    Starts from an image the model puts in the top-k for the target (``start=``, or a bundled
    photo found through the oracle). Loss: −log p(target) over the NES samples whose top-k
    reveals the target; the rest get zero weight.
    Query cost per step: ``samples`` (NES) + one per line-search proposal (≥ 1).
    Also: 1 clean query, the start-image check(s), and 1 final 8-bit verification.
    """

    config_class = PIConfig

    def sample_loss(
        self, oracle: Oracle, state: AttackState, pts: FloatArray, prow: IntArray
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        obs = oracle.query(pts, state.ids[prow], QueryKind.GRADIENT)
        p = obs.score_of(state.target[prow]).astype(np.float64)
        valid = np.isfinite(p)
        return -np.log(np.maximum(np.where(valid, p, 1.0), 1e-30)), valid


@register(
    "lo",
    rank=21,
    paper=ILYAS_2018,
    views=("labels", "topk", "scores"),
    norms=("linf",),
    untargeted=False,
    needs_start=True,
    budget=1_000_000,
    default_for=("lo",),
)
class LOAttack(_Shrinking[LOConfig]):
    """Label-only attack: top-k labels, ranked, no scores.

    Paper: Ilyas, Engstrom, Athalye, Lin, ICML 2018 (arXiv:1804.08598), §2.3.
    Threat model: top-k labels without scores (``Labels(k)`` / ``Label()``).
    Norm: L∞, ε-shrinking as in PI. Loss: 1 − S(x), where the proxy score S is the mean over
    ``noise_samples`` uniform perturbations in [−μ, μ] of (k − rank)/k (0 when the target is
    absent); normalised by k, which fixes the reference code's k > 1 scale bug.
    Query cost per step: ``samples × noise_samples`` (every noise sample is a query) + one per
    line-search proposal (≥ 1). Also: 1 clean query, start-image check(s), 1 final check.
    """

    config_class = LOConfig

    def gradient_cost(self) -> int:
        cfg = self.config
        return cfg.samples * cfg.noise_samples

    def sample_loss(
        self, oracle: Oracle, state: AttackState, pts: FloatArray, prow: IntArray
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        cfg = self.config
        k = oracle.view.k or oracle.num_classes
        m = cfg.noise_samples
        per = cfg.samples
        rows = prow[::per]  # nes_gradient gives each image a contiguous block of `samples`
        shape = pts.shape[1:]
        pts_r = pts.reshape(len(rows), per, *shape)
        out = np.empty((len(rows), per), dtype=np.float64)
        c = cfg.points_per_chunk
        group = max(1, cfg.max_rows // (c * m))  # images per oracle batch: bounds memory
        mu = np.float32(cfg.mu)
        for s in range(0, per, c):
            e = min(s + c, per)
            for a in range(0, len(rows), group):
                rr = rows[a : a + group]
                noisy = np.empty((len(rr), e - s, m, *shape), dtype=np.float32)
                # Each image draws from its own stream in a fixed order, whatever the grouping.
                for j, r in enumerate(rr):
                    torch.from_numpy(noisy[j]).uniform_(-1.0, 1.0, generator=state.rngs[r])
                noisy *= mu
                noisy += pts_r[a : a + group, s:e, None]
                np.clip(noisy, *oracle.bounds, out=noisy)
                n_each = (e - s) * m
                obs = oracle.query(
                    noisy.reshape(-1, *shape), np.repeat(state.ids[rr], n_each), QueryKind.NOISE
                )
                rank = obs.rank_of(np.repeat(state.target[rr], n_each))
                score = np.where(rank >= 0, (k - rank) / k, 0.0).reshape(len(rr), e - s, m)
                out[a : a + group, s:e] = 1.0 - score.mean(axis=2)
        return out.reshape(-1), np.ones(len(prow), dtype=bool)
