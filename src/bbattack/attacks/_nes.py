"""Shared pieces of the NES-based attacks: the gradient estimate, momentum and plateau decay."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import Field, model_validator

from ._plain import PlainState
from .base import AttackConfig, AttackState

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


# (points (M, C, H, W), row of each point) -> (loss (M,), valid (M,)); spends the queries.
class NESConfig(AttackConfig):
    """Hyperparameters shared by the NES attacks: estimator, PGD step, momentum, plateau."""

    sigma: float = Field(1e-3, gt=0.0, description="NES search standard deviation")
    samples: int = Field(50, ge=2, description="NES samples per estimate (even; antithetic)")
    max_lr: float = Field(1e-2, gt=0.0)
    min_lr: float = Field(5e-5, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    plateau_length: int = Field(5, ge=1)
    plateau_drop: float = Field(2.0, gt=1.0)

    @model_validator(mode="after")
    def _check_nes(self) -> NESConfig:
        if self.samples % 2:
            raise ValueError("samples must be even (antithetic pairs)")
        if self.min_lr > self.max_lr:
            raise ValueError("min_lr must not exceed max_lr")
        return self


SampleLoss = Callable[[FloatArray, IntArray], tuple[NDArray[np.float64], BoolArray]]


def nes_gradient(
    state: AttackState,
    rows: IntArray,
    sigma: float,
    samples: int,
    sample_loss: SampleLoss,
    bounds: tuple[float, float],
    max_rows: int,
    tile: int = 1,
) -> tuple[FloatArray, NDArray[np.float64]]:
    """NES over groups of images holding at most ``max_rows`` sample images in memory at once.
    ``tile`` > 1: each sample is drawn per ``tile`` x ``tile`` block of pixels (a coarser,
    low-frequency search space, as Bandits' tiling).

    Each image draws from its own stream, so the grouping never changes the result.
    """
    per = max(1, max_rows // samples)
    parts = [
        _nes_group(state, rows[i : i + per], sigma, samples, sample_loss, bounds, tile)
        for i in range(0, len(rows), per)
    ]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([g for g, _ in parts]), np.concatenate([m for _, m in parts])


def _nes_group(
    state: AttackState,
    rows: IntArray,
    sigma: float,
    samples: int,
    sample_loss: SampleLoss,
    bounds: tuple[float, float],
    tile: int = 1,
) -> tuple[FloatArray, NDArray[np.float64]]:
    """Antithetic NES estimate of the loss gradient at ``state.x[rows]``.

    ``samples`` model evaluations per image (samples/2 antithetic pairs, as in the reference
    code). Samples whose loss is invalid (e.g. target not in the revealed top-k) get zero
    weight; the mean valid loss is the baseline. Returns (gradient, mean valid loss; inf where
    no sample was valid).
    """
    m = len(rows)
    shape = state.x.shape[1:]
    half = samples // 2
    u = tiled_normal(state, rows, half, tile)
    # Antithetic points x ± σu written in place: no (m, samples, D) noise copy is made.
    su = u * np.float32(sigma)
    x = state.x[rows][:, None]
    pts = np.empty((m, samples, *shape), dtype=np.float32)
    np.add(x, su, out=pts[:, :half])
    np.subtract(x, su, out=pts[:, half:])
    np.clip(pts, bounds[0], bounds[1], out=pts)
    loss, valid = sample_loss(pts.reshape(m * samples, *shape), np.repeat(rows, samples))
    loss = loss.reshape(m, samples)
    valid = valid.reshape(m, samples)
    nvalid = valid.sum(axis=1)
    mean = np.where(
        nvalid > 0, np.where(valid, loss, 0.0).sum(axis=1) / np.maximum(nvalid, 1), np.inf
    )
    w = np.where(valid, loss - mean[:, None], 0.0)
    # Σ w⁺u − Σ w⁻u = Σ (w⁺ − w⁻)u; one batched (1 × half) @ (half × D) BLAS call per image.
    wd = (w[:, :half] - w[:, half:]).astype(np.float32)
    g: FloatArray = np.matmul(wd[:, None, :], u.reshape(m, half, -1))[:, 0, :]
    g /= (np.float32(sigma) * np.maximum(nvalid, 1).astype(np.float32))[:, None]
    return g.reshape(m, *shape), mean


def tiled_normal(state: AttackState, rows: IntArray, per_row: int, tile: int = 1) -> FloatArray:
    """(len(rows), per_row, C, H, W) standard normal draws from each row's own stream (so they
    depend only on that image's history, not on the batch); ``tile`` > 1: one draw per
    ``tile`` x ``tile`` block of pixels."""
    ch, h, w = state.x.shape[1:]
    coarse = (ch, -(-h // tile), -(-w // tile))
    u = np.empty((len(rows), per_row, *coarse), dtype=np.float32)
    for j, r in enumerate(rows):
        torch.from_numpy(u[j]).normal_(generator=state.rngs[r])
    if tile == 1:
        return u
    return np.repeat(np.repeat(u, tile, axis=3), tile, axis=4)[..., :h, :w].copy()


@dataclass
class NESState(PlainState):
    """Momentum and the plateau window of the NES attacks, per image (row i = image i)."""

    grad: FloatArray  # momentum of the gradient estimate, (N, C, H, W)
    hist: NDArray[np.float64]  # the last ``plateau_length`` losses, newest last
    hcount: IntArray  # how many of them belong to the current learning rate

    @classmethod
    def zeros(cls, x: FloatArray, plateau_length: int) -> NESState:
        n = len(x)
        return cls(
            grad=np.zeros_like(x),
            hist=np.zeros((n, plateau_length), dtype=np.float64),
            hcount=np.zeros(n, dtype=np.int64),
        )

    def momentum(self, rows: IntArray, g: FloatArray, beta: float) -> FloatArray:
        gm = self.grad
        gm[rows] = np.float32(beta) * gm[rows] + np.float32(1.0 - beta) * g
        return gm[rows]

    def plateau(
        self,
        lr: FloatArray,
        rows: IntArray,
        loss: NDArray[np.float64],
        drop: float,
        min_lr: float,
    ) -> None:
        """Keep the last L losses per image; if the window is full and the loss rose, decay
        ``lr`` (in place)."""
        hist, hcount = self.hist, self.hcount
        length = hist.shape[1]
        hist[rows] = np.roll(hist[rows], -1, axis=1)
        hist[rows, -1] = loss
        hcount[rows] = np.minimum(hcount[rows] + 1, length)
        full = hcount[rows] == length
        decay = rows[full & (hist[rows, -1] > hist[rows, length - hcount[rows]])]
        lr[decay] = np.maximum(lr[decay] / drop, min_lr)
        hcount[decay] = 0

    def clear_plateau(self, rows: IntArray) -> None:
        self.hcount[rows] = 0
