"""Adaptive Square's moves above its own window: the floor's area in one window, or scattered
over many windows of Square's size; a per-image bandit picks the one that gets kept."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

from .._rand import Streams
from ..base import BoolArray, FloatArray, IntArray

__all__ = ["Scatter", "choose", "dither", "scattered", "snap", "tally"]

Scatter = Literal["auto", "on", "off"]
_FINE = 2  # dithers up to this many levels move values at random; beyond, by block
_EXPLORE = 0.5  # UCB's exploration weight: both moves stay in play while their rates are close


def choose(mode: Scatter, tries: IntArray, kept: IntArray, rows: IntArray) -> BoolArray:
    """Per row: scatter (True) or one window (False). ``auto`` takes the move whose kept rate
    has the higher upper confidence bound (UCB1 over each image's own steps; a tie
    scatters): behind a similarity detector one large window is mostly refused, while on a
    model that reads only broad colour, windows of independent signs average away."""
    if mode != "auto":
        return np.full(len(rows), mode == "on")
    t, k = tries[rows].astype(np.float64), kept[rows].astype(np.float64)
    bound = (k + 1) / (t + 2) + _EXPLORE * np.sqrt(np.log(t.sum(1, keepdims=True) + 2) / (t + 1))
    return np.asarray(bound[:, 1] >= bound[:, 0])


def tally(
    tries: IntArray, kept: IntArray, rows: IntArray, spread: BoolArray, keep: BoolArray
) -> None:
    """Count each row's move (column 1: scattered) and whether its candidate was kept."""
    arm = spread.astype(np.int64)
    np.add.at(tries, (rows, arm), 1)
    np.add.at(kept, (rows, arm), keep.astype(np.int64))


def scattered(
    x: FloatArray, hi: FloatArray, lo: FloatArray, rng: Streams, row: int, n: int, s: int
) -> FloatArray:
    """The image ``x`` (C, H, W) with ``n`` s×s windows redrawn, each at a random place with its
    own random sign per channel (the last drawn wins where they overlap), from the row's own
    stream: a move as large as the floor asks for that never repeats a stored query."""
    ch, h, w = x.shape
    r = np.array([row])
    u = rng.uniform(r, 2 * n)[0].reshape(n, 2)
    corner = np.minimum((u * [h - s + 1, w - s + 1]).astype(np.int64), [h - s, w - s])
    up = rng.signs(r, n * ch)[0].reshape(n, ch) > 0
    which = np.full((h, w), -1, np.int64)
    for i, (a, b) in enumerate(corner):  # at most a few hundred slices
        which[a : a + s, b : b + s] = i
    signs = up[np.maximum(which, 0)].transpose(2, 0, 1)  # (ch, h, w)
    new = np.where(signs, hi, lo)
    out: NDArray[np.float32] = np.asarray(np.where(which[None] >= 0, new, x), np.float32)
    return out


def snap(x: FloatArray, x0: FloatArray, hi: FloatArray, lo: FloatArray) -> FloatArray:
    """A dithered iterate back on the ball's vertices: each value at the vertex on its side of
    the clean image ``x0`` (a dither never reaches ``x0``); values at ``x0`` stay."""
    side = np.where(x > x0, hi, np.where(x < x0, lo, x))
    out: FloatArray = side.astype(np.float32)
    return out


def dither(
    cand: FloatArray, x0: FloatArray, hi: FloatArray, lo: FloatArray, u: NDArray[np.float64],
    units: IntArray, grid: int = 0,
) -> FloatArray:  # fmt: skip
    """Each row of ``cand`` (N, C, H, W) with a random half of its values moved its
    ``units``/255 towards the clean image ``x0``, inside the ball: a fresh pattern per query,
    too small to change the model's answer much, that changes the 8-bit quantisation bin of
    enough values for a pixel fingerprint (Blacklight's window hashes) to share few hashes
    with any stored query. Rows dithered more than ``_FINE`` levels, with ``grid`` > 0: each
    of a grid × grid of blocks also draws a direction per channel, and only values whose way
    to ``x0`` is that direction move, so the block's mean colour shifts, which a perceptual
    hash of block means (PIHA) sees.
    ``u``: (N, C·H·W + C·grid²) uniforms in [0, 1)."""
    n, ch, h, w = cand.shape
    # On the 8-bit grid, as the ball's vertices are (what is queried is what is saved).
    q, q_lo, q_hi = (np.rint(v.astype(np.float64) * 255.0) for v in (cand, lo, hi))
    q0 = np.rint(x0.astype(np.float64) * 255.0)
    inward = -np.sign(q - q0)
    step = units.reshape((-1,) + (1,) * (cand.ndim - 1))
    move = u[:, : ch * h * w].reshape(cand.shape) < 0.5
    if grid:
        ways = np.where(u[:, ch * h * w :].reshape(n, ch, grid, grid) < 0.5, -1.0, 1.0)
        rows, cols = np.arange(h) * grid // h, np.arange(w) * grid // w
        move &= (step <= _FINE) | (inward == ways[:, :, rows][:, :, :, cols])
    # Never onto or past x0, so the value stays on its side (``snap`` finds its vertex).
    size = np.minimum(step, np.maximum(np.abs(q - q0) - 1, 0))
    out: FloatArray = (np.clip(q + inward * move * size, q_lo, q_hi) / 255.0).astype(np.float32)
    return out
