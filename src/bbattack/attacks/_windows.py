"""Square windows for random-search attacks: sizes from a p schedule, masks, and the L2
Square Attack's pseudo-Gaussian bumps, all for many images at once (one window per image)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ._rand import Streams

__all__ = ["bumps", "paper_p", "positions", "side", "window_mask"]

IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]
FloatArray = NDArray[np.float32]

# Square Attack §3 / App. A: p halves after these iterations of a 10,000-iteration run.
_HALVINGS = np.array([10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000], np.int64)


def paper_p(
    p_init: float | NDArray[np.float64], it: IntArray, n_iters: IntArray
) -> NDArray[np.float64]:
    """The paper's piecewise-constant schedule, stretched over each image's ``n_iters``."""
    t = np.asarray(it, np.int64) * 10_000 // np.maximum(np.asarray(n_iters, np.int64), 1)
    halvings = np.searchsorted(_HALVINGS, t, side="left")
    return np.asarray(p_init / 2.0 ** halvings.astype(np.float64))


def side(p: NDArray[np.float64], h: int, w: int, least: int = 1) -> IntArray:
    """Window side for a fraction ``p`` of the image's pixels, in [least, min(h, w) − 1]."""
    s = np.rint(np.sqrt(p * h * w)).astype(np.int64)
    return np.clip(s, min(least, min(h, w) - 1), max(min(h, w) - 1, 1))


def positions(rng: Streams, rows: IntArray, s: IntArray, h: int, w: int) -> IntArray:
    """(m, 2) top-left corners of s×s windows, uniform over the image (one draw per row)."""
    u = rng.uniform(rows, 2)
    hi = np.stack([h - s + 1, w - s + 1], axis=1)
    return np.minimum((u * hi).astype(np.int64), hi - 1)


def window_mask(r: IntArray, c: IntArray, s: IntArray, h: int, w: int) -> BoolArray:
    """(n, 1, h, w): True inside each row's s×s window whose top-left corner is (r, c)."""
    ii = np.arange(h)[None, :]
    jj = np.arange(w)[None, :]
    rin = (ii >= r[:, None]) & (ii < (r + s)[:, None])
    cin = (jj >= c[:, None]) & (jj < (c + s)[:, None])
    return np.asarray((rin[:, :, None] & cin[:, None, :])[:, None])


def _tail_sums(n: int) -> NDArray[np.float64]:
    """T[d] = Σ_{k=d}^{n} 1/(k+1)², T[n+1] = 0."""
    inv = 1.0 / (np.arange(n + 1, dtype=np.float64) + 1.0) ** 2
    out = np.zeros(n + 2)
    out[: n + 1] = np.cumsum(inv[::-1])[::-1]
    return out


def _bump(a: IntArray, b: IntArray, hh: IntArray, ww: IntArray) -> NDArray[np.float64]:
    """Concentric-square bump on an hh×ww rectangle at local coordinates (a, b): the value at
    Chebyshev ring d from the centre is Σ_{k=d}^{K} 1/(k+1)², K the outermost ring."""
    ca = (hh - 1) / 2.0
    cb = (ww - 1) / 2.0
    d = np.floor(np.maximum(np.abs(a - ca), np.abs(b - cb))).astype(np.int64)
    big = int(max(int(np.max(hh)), int(np.max(ww)), 1))
    tail = _tail_sums(big)
    k = np.maximum(hh, ww) // 2
    d = np.minimum(d, k)
    return np.asarray(tail[d] - tail[k + 1])


def bumps(
    r: IntArray, c: IntArray, s: IntArray, flip: BoolArray, h: int, w: int
) -> NDArray[np.float64]:
    """(n, 1, h, w): each row's s×s window holds two bumps of opposite sign side by side (split
    across rows when ``flip``, else across columns), scaled to unit L2 norm; zero outside.
    The L2 Square Attack's "meta pseudo-Gaussian" update (Andriushchenko et al. 2020, §3.2)."""
    n = len(r)
    a = np.arange(h)[None, :, None] - r[:, None, None]  # (n, h, 1) local row
    b = np.arange(w)[None, None, :] - c[:, None, None]  # (n, 1, w) local column
    ss = s[:, None, None]
    inside = (a >= 0) & (a < ss) & (b >= 0) & (b < ss)
    # Rotate the split axis per row: the split runs along u, the other axis is v.
    fl = flip[:, None, None]
    u = np.where(fl, a, b)
    v = np.where(fl, b, a)
    half = ss // 2
    first = u < half
    uu = np.where(first, u, u - half)
    width = np.where(first, half, ss - half)
    val = _bump(np.broadcast_to(v, uu.shape), uu, np.broadcast_to(ss, uu.shape), width)
    val = np.where(first, val, -val) * inside
    norm = np.sqrt((val.reshape(n, -1) ** 2).sum(axis=1))
    return np.asarray((val / np.maximum(norm, 1e-12)[:, None, None])[:, None])
