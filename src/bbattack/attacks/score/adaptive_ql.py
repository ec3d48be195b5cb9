"""Adaptive NES: the QL attack made to get past similarity detectors the way OARS adapts NES
(Feng et al., CCS 2023): the sampling radius is calibrated to what is not refused, and a
refused sample is a lost sample, not a stop."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from ...oracle import Oracle, QueryKind, ScoresObservation
from .._nes import NESState, nes_gradient, tiled_normal
from ..base import AttackState, BoolArray, FloatArray, IntArray
from ..registry import register
from ._refusals import ask_each, ladder_search
from .adaptive import OARS_2023
from .ql import QLAttack, QLConfig, QLState

__all__ = ["AdaptiveQLAttack", "AdaptiveQLConfig", "AdaptiveQLState"]


class AdaptiveQLConfig(QLConfig):
    """QL's hyperparameters, and how it answers a defence."""

    sigma_max: float = Field(
        0.25,
        gt=0.0,
        le=1.0,
        description="the ladder's top sampling radius (below it: sigma x 2^j)",
    )
    calibrate: bool = Field(
        True,
        description="search, before the first step, the smallest sampling radius whose "
        "samples are not refused (a few counted probes)",
    )
    raise_after: int = Field(
        3, ge=1, description="refused samples in a row after which the radius doubles"
    )
    tile: int = Field(
        1,
        ge=1,
        le=256,
        description="draw each sample per tile x tile block of pixels (1: per pixel); "
        "a perceptual hash such as PIHA's averages per-pixel samples away",
    )
    stale: bool = Field(
        True,
        description="take an answer bit-identical to the last one any image was given (a "
        "silent defence's stale answer) as a refusal",
    )


@dataclass
class AdaptiveQLState(QLState):
    """QL's state, and per image: the radius ladder's search and level, the refusals in a
    row, and the last answer (stale answers)."""

    top: IntArray  # the ladder's top level: sigma * 2^top >= sigma_max
    cal_lo: IntArray  # the highest level known refused (-1: none)
    cal_hi: IntArray  # the lowest level known to pass (top + 1: none)
    level: IntArray  # the sampling radius in use, as a ladder level
    streak: IntArray  # refused samples in a row
    rejected: IntArray  # refusals met (refused or stale)
    prev: FloatArray  # (N, K) the last answer, for stale answers
    answered: BoolArray  # whether ``prev`` holds one


@register(
    "adaptive-ql",
    rank=131,  # after the attacks it adapts: a defence-specific one
    paper=OARS_2023,
    views=("scores",),
    norms=("linf",),
    budget=20_000,
    against=("blacklight", "piha", "stateful"),
    adapts="ql",
)
class AdaptiveQLAttack(QLAttack):
    """NES (the QL attack) behind a similarity detector: calibrate the sampling radius to
    what is not refused, drop refused samples from the estimate, and go on.

    Paper: Feng, Hooda, Mangaokar, Fawaz, Jha, Prakash, "Stateful Defenses for Machine
    Learning Models Are Not Yet Secure Against Black-box Attacks", CCS 2023
    (arXiv:2303.06280), its adaptation of NES, on the QL attack (Ilyas et al., ICML 2018,
    arXiv:1804.08598). Threat model: full scores (QL) with a defence in front of the target
    that refuses (or bans, or answers silently) the queries it flags. Norm: L∞.

    * **Why NES is flagged.** Its samples ``x ± σu`` with σ = 0.001 are a fraction of an
      8-bit level from the iterate: a detector of similar queries (Blacklight quantises
      pixels to steps of 50 levels) sees one image asked fifty times.
    * **Calibration.** Before its first step each image searches a geometric ladder of radii
      σ, 2σ, ... up to ``sigma_max`` (binary search, one counted probe per level tried: about
      3) for the smallest radius whose sample is not refused; the samples use it from then
      on. Larger radii estimate the gradient of a smoother loss: the price of passing.
    * **Refusals.** A refused sample gets zero weight in the estimate (as an invalid sample
      does); after ``raise_after`` refusals in a row the radius goes up a level. A refused
      success check leaves the iterate unchecked (it is checked again after the next step;
      the loss plateau waits for an answer). KeyBanned ends the run (``banned``). A
      bit-identical repeat of the last answer any image was given (the key's last one) is a
      silent defence's stale answer and counts as a refusal (``stale``).

    Query cost per step: ``samples`` (one call each, so a refusal never takes down another
    sample) + 1 success check; a calibrating image pays 1 probe per step instead. Also: 1 for
    the clean image, 1 for the final verification. Every refused or stale query is counted.
    """

    config_class = AdaptiveQLConfig
    config: AdaptiveQLConfig

    def _sigma(self, level: IntArray) -> FloatArray:
        """The ladder's radii: sigma x 2^level, the top one ``sigma_max`` itself."""
        c = self.config
        return np.asarray(
            np.minimum(c.sigma * 2.0 ** level.astype(np.float64), c.sigma_max), np.float32
        )

    def init(self, oracle: Oracle, state: AttackState, start: FloatArray | None) -> None:
        c = self.config
        obs = self.scores(self.clean_query(oracle, state))
        n = len(state.x)
        state.loss[:] = self._loss(obs, state, np.arange(n))
        state.lr[:] = c.max_lr
        top = np.full(n, max(0, int(np.ceil(np.log2(c.sigma_max / c.sigma)))), np.int64)
        state.own = AdaptiveQLState(
            nes=NESState.zeros(state.x, c.plateau_length),
            top=top,
            cal_lo=np.full(n, -1, np.int64),
            cal_hi=top + 1 if c.calibrate else np.full(n, -1, np.int64),
            level=np.zeros(n, np.int64),
            streak=np.zeros(n, np.int64),
            rejected=np.zeros(n, np.int64),
            prev=np.array(obs.probs, np.float32),
            answered=np.ones(n, bool),
        )

    def step(self, oracle: Oracle, state: AttackState) -> None:
        own = self.own(state, AdaptiveQLState)
        live = np.flatnonzero(state.active)
        probing = own.cal_hi[live] - own.cal_lo[live] > 1
        self._probe(oracle, state, self._payers(oracle, state, live[probing], 1))
        rows = self._payers(oracle, state, live[~probing], self.config.samples + 1)
        for r in rows:  # one image at a time: its samples go one call each anyway
            self._nes_step(oracle, state, np.array([r]))

    def _payers(self, oracle: Oracle, state: AttackState, rows: IntArray, cost: int) -> IntArray:
        """``rows`` that can pay ``cost``; the others stop (budget)."""
        ok = self.can_pay(oracle, state, rows, cost)
        self.stop(state, rows[~ok], "budget")
        out: IntArray = rows[ok]
        return out

    def _probe(self, oracle: Oracle, state: AttackState, rows: IntArray) -> None:
        """One step of each row's ladder search: a sample at the middle level, counted."""
        if not len(rows):
            return
        own = self.own(state, AdaptiveQLState)
        level = (own.cal_lo[rows] + own.cal_hi[rows]) // 2
        u = tiled_normal(state, rows, 1, self.config.tile)[:, 0]
        sig = self._sigma(level).reshape(-1, 1, 1, 1)
        lo, hi = oracle.bounds
        pts = np.clip(state.x[rows] + sig * u, lo, hi).astype(np.float32)
        kinds = [QueryKind.PROBE] * len(rows)
        ok, _ = ask_each(oracle, state.ids, rows, pts, kinds, own, stale=self.config.stale)
        done = ladder_search(own.cal_lo, own.cal_hi, rows, level, ok)
        # Nothing passed (cal_hi past the top): the top radius, and the refusals show.
        own.level[done] = np.minimum(own.cal_hi[done], own.top[done])

    def _nes_step(self, oracle: Oracle, state: AttackState, rows: IntArray) -> None:
        """QL's step for one image, its samples asked one at a time, refused ones dropped."""
        c = self.config
        own = self.own(state, AdaptiveQLState)

        def sample_loss(pts: FloatArray, prow: IntArray) -> tuple[np.ndarray, np.ndarray]:
            kinds = [QueryKind.GRADIENT] * len(prow)
            ok, obs = ask_each(oracle, state.ids, prow, pts, kinds, own, stale=c.stale)
            loss = np.zeros(len(prow))
            if ok.any():
                loss[ok] = self._loss(ScoresObservation(obs.probs[ok]), state, prow[ok])
            self._adapt(own, prow, ok)
            return loss, ok

        sigma = float(self._sigma(own.level[rows])[0])
        g, _ = nes_gradient(
            state, rows, sigma, c.samples, sample_loss, oracle.bounds, c.max_rows, c.tile
        )
        g = own.nes.momentum(rows, g, c.momentum)
        step = state.lr[rows].reshape(-1, 1, 1, 1) * np.sign(g)
        state.x[rows] = state.ball.project(
            state.x[rows] - step, state.x0[rows], state.eps[rows], oracle.bounds
        )
        xq = self.quantized(state, rows, state.x[rows], state.eps[rows])
        ok, obs = ask_each(
            oracle, state.ids, rows, xq, [QueryKind.SUCCESS_CHECK], own, stale=c.stale
        )
        state.xq[rows] = xq
        if not ok[0]:
            return  # unchecked: the next step's check covers it
        loss = self._loss(obs, state, rows)
        state.loss[rows] = loss
        self.record(obs, state, rows)
        own.nes.plateau(state.lr, rows, loss, c.plateau_drop, c.min_lr)
        self.mark_success(oracle, state, rows, self.goal_hit(state, obs, rows))

    def _adapt(self, own: AdaptiveQLState, rows: IntArray, ok: BoolArray) -> None:
        """Refusals in a row, sample after sample; ``raise_after`` of them: the next level."""
        for r, answered in zip(rows, ok, strict=True):
            own.streak[r] = 0 if answered else own.streak[r] + 1
            if own.streak[r] >= self.config.raise_after:
                own.level[r] = min(own.level[r] + 1, own.top[r])
                own.streak[r] = 0
