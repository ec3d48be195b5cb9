"""Bandits-TD (Ilyas, Engstrom, Madry, ICLR 2019): gradient estimation with time and data
priors, written from the paper."""

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
from ..base import Attack, AttackConfig, AttackState, FloatArray, IntArray
from ..registry import Paper, register

__all__ = ["BANDITS_2019", "BanditsAttack", "BanditsConfig", "BanditsState"]

BANDITS_2019 = Paper(
    title="Prior Convictions: Black-Box Adversarial Attacks with Bandits and Priors",
    authors="Ilyas, Engstrom, Madry",
    venue="ICLR 2019",
    arxiv="1807.07978",
)


class BanditsConfig(AttackConfig):
    """Defaults: the paper's ImageNet L∞ settings (its README: fd-eta 0.1, image-lr 0.01,
    online-lr 100, exploration 1.0, tile size 6). For L2 the paper uses image-lr 0.5,
    online-lr 0.1, exploration 0.01, fd-eta 0.01: pass them for an L2 run."""

    fd_eta: float = Field(0.1, gt=0.0, description="finite-difference probe length")
    image_lr: float = Field(0.01, gt=0.0, description="image step size")
    online_lr: float = Field(100.0, gt=0.0, description="prior (bandit) step size")
    exploration: float = Field(1.0, gt=0.0, description="prior exploration radius δ")
    tile_size: int = Field(6, ge=1, description="data prior: pixels per prior cell")
    loss: Loss = Field("ce", description="loss on log-probabilities: ce (the paper) or margin")


@dataclass
class BanditsState(PlainState):
    """Bandits' own state: the gradient prior and the exploration noise streams."""

    prior: FloatArray  # (N, C, ⌈H/tile⌉, ⌈W/tile⌉)
    rng: Streams


@register(
    "bandits",
    rank=40,
    paper=BANDITS_2019,
    views=("scores",),
    norms=("linf", "l2"),
    budget=10_000,
)
class BanditsAttack(Attack[BanditsConfig]):
    """Bandits-TD: a gradient prior kept across steps (time) and tiled at low resolution
    (data), refined by two antithetic finite-difference probes per step.

    Paper: Ilyas, Engstrom, Madry, "Prior Convictions: Black-Box Adversarial Attacks with
    Bandits and Priors", ICLR 2019 (arXiv:1807.07978), Alg. 2-3.
    Threat model: full scores (``Scores`` view). Norms: L∞ (exponentiated-gradient prior,
    sign steps) and L2 (gradient-ascent prior, normalised steps).
    Query cost per step: 2 (the probes) + 1 (the success check of the new 8-bit iterate,
    which the reference code leaves uncounted). Also: 1 clean query, 1 final verification.
    """

    config_class = BanditsConfig

    def _loss(self, obs: ScoresObservation, state: AttackState, rows: IntArray) -> Any:
        return score_loss(obs, state.target[rows], state.orig[rows], self.config.loss)

    def init(self, oracle: Oracle, state: AttackState, start: FloatArray | None) -> None:
        n, (ch, h, w) = len(state.x), state.x.shape[1:]
        obs = self.scores(self.clean_query(oracle, state))
        state.loss[:] = self._loss(obs, state, np.arange(n))
        t = self.config.tile_size
        state.own = BanditsState(
            prior=np.zeros((n, ch, -(-h // t), -(-w // t)), np.float32),
            rng=Streams(state.seeds),
        )
        state.lr[:] = self.config.image_lr

    def _up(self, v: FloatArray, h: int, w: int) -> FloatArray:
        t = self.config.tile_size
        return np.repeat(np.repeat(v, t, axis=2), t, axis=3)[:, :, :h, :w]

    def step(self, oracle: Oracle, state: AttackState) -> None:
        cfg = self.config
        rows = self.affordable_rows(oracle, state, 3)
        if not len(rows):
            return
        m, (h, w) = len(rows), state.x.shape[2:]
        own = self.own(state, BanditsState)
        rng, prior = own.rng, own.prior
        v = prior[rows]
        # Exploration noise of expected norm δ: the paper divides N(0, I) by √dim, so that the
        # prior (entries in [-1, 1]) is not drowned and the bandit step stays on scale.
        scale = np.float32(cfg.exploration / np.sqrt(v[0].size))
        u = rng.normal(rows, v[0].size).reshape(v.shape) * scale
        x = state.x[rows]
        probes = []
        for q in (v + u, v - u):
            step = _unit(self._up(q, h, w))
            probes.append(np.clip(x + np.float32(cfg.fd_eta) * step, *oracle.bounds))
        obs = self.query_scores(
            oracle, np.concatenate(probes), state.ids[np.tile(rows, 2)], QueryKind.GRADIENT
        )
        both = self._loss(obs, state, np.tile(rows, 2))
        # The bandit's reward: the finite-difference slope of the loss along the prior.
        slope = (both[:m] - both[m:]) / (cfg.fd_eta * cfg.exploration)
        g = (slope.reshape(-1, 1, 1, 1) * u).astype(np.float32)
        if cfg.norm == "linf":
            prior[rows] = _eg_step(v, g, cfg.online_lr)
            move = np.sign(self._up(prior[rows], h, w))
        else:
            prior[rows] = _l2_prior_step(v, g, cfg.online_lr)
            move = _unit(self._up(prior[rows], h, w))
        # The prior tracks the loss gradient; the loss is descended.
        lr = state.lr[rows].reshape(-1, 1, 1, 1)
        x = state.ball.project(x - lr * move, state.x0[rows], state.eps[rows], oracle.bounds)
        state.x[rows] = x
        xq = self.quantized(state, rows, x, state.eps[rows])
        check = self.query_scores(oracle, xq, state.ids[rows], QueryKind.SUCCESS_CHECK)
        state.xq[rows] = xq
        state.loss[rows] = self._loss(check, state, rows)
        self.record(check, state, rows)
        hit = self.goal_hit(state, check, rows)
        self.mark_success(oracle, state, rows, hit)


def _eg_step(v: FloatArray, g: FloatArray, lr: float) -> FloatArray:
    """Exponentiated gradient on the prior, read as a probability (v + 1)/2 in [0, 1]."""
    p = (v.astype(np.float64) + 1.0) / 2.0
    e = np.clip(lr * g.astype(np.float64), -50.0, 50.0)  # exp stays finite
    pos = p * np.exp(e)
    neg = (1.0 - p) * np.exp(-e)
    out: NDArray[np.float64] = pos / np.maximum(pos + neg, 1e-300) * 2.0 - 1.0
    return out.astype(np.float32)


def _unit(a: FloatArray) -> FloatArray:
    """Each row scaled to L2 norm 1."""
    norm = np.sqrt((a.reshape(len(a), -1).astype(np.float64) ** 2).sum(axis=1))
    out: FloatArray = (a / np.maximum(norm, 1e-12).reshape((-1,) + (1,) * (a.ndim - 1))).astype(
        np.float32
    )
    return out


def _l2_prior_step(v: FloatArray, g: FloatArray, lr: float) -> FloatArray:
    """Gradient ascent along the unit reward direction, then back into the unit ball."""
    new = v + np.float32(lr) * _unit(g)
    norm = np.sqrt((new.reshape(len(new), -1).astype(np.float64) ** 2).sum(axis=1))
    shrink = np.minimum(1.0, 1.0 / np.maximum(norm, 1e-12)).reshape(-1, 1, 1, 1)
    out: FloatArray = (new * shrink).astype(np.float32)
    return out
