"""Counter-based random numbers, one stream per image, drawn for many images at once.

A draw is a pure function of (image seed, counter, index): splitmix64 over the three. The
state of every image's stream is one integer counter, so it is plain data (checkpointable)
and a batch of images draws exactly what each image would draw alone, with no Python loop
over images. Random search attacks make a few small draws per image per step, where a loop
over per-image generators would cost more than the arithmetic.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["Streams"]

U64 = NDArray[np.uint64]
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: U64) -> U64:
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    out: U64 = z ^ (z >> np.uint64(31))
    return out


class Streams:
    """Per-image streams keyed by seed. ``counter[i]`` counts the draws image i has made."""

    def __init__(self, seeds: NDArray[np.int64], counter: NDArray[np.int64] | None = None):
        with np.errstate(over="ignore"):
            self.keys: U64 = _mix(np.asarray(seeds, np.int64).astype(np.uint64) + _GOLDEN)
        self.counter = np.zeros(len(seeds), np.int64) if counter is None else counter

    def bits(self, rows: NDArray[np.int64], n: int) -> U64:
        """(len(rows), n) uniform 64-bit words; advances each row's counter by one."""
        c = self.counter[rows].astype(np.uint64)
        self.counter[rows] += 1
        idx = np.arange(n, dtype=np.uint64)
        with np.errstate(over="ignore"):
            z = _mix(self.keys[rows] ^ (c * _GOLDEN))
            return _mix(z[:, None] + (idx[None, :] + np.uint64(1)) * _GOLDEN)

    def uniform(self, rows: NDArray[np.int64], n: int) -> NDArray[np.float64]:
        """(len(rows), n) floats in [0, 1)."""
        return (self.bits(rows, n) >> np.uint64(11)).astype(np.float64) / float(1 << 53)

    def signs(self, rows: NDArray[np.int64], n: int) -> NDArray[np.float32]:
        """(len(rows), n) of ±1."""
        b = self.bits(rows, n) >> np.uint64(63)
        return (b.astype(np.float32) * 2.0 - 1.0).astype(np.float32)

    def normal(self, rows: NDArray[np.int64], n: int) -> NDArray[np.float32]:
        """(len(rows), n) standard normal draws (Box-Muller over 2n uniforms)."""
        u = self.uniform(rows, 2 * n)
        r = np.sqrt(-2.0 * np.log1p(-u[:, :n]))  # 1 - u lies in (0, 1]: the log is finite
        return (r * np.cos(2.0 * np.pi * u[:, n:])).astype(np.float32)

    def permutation(self, rows: NDArray[np.int64], n: int) -> NDArray[np.int64]:
        """(len(rows), n): a random order of 0..n-1 per row."""
        return np.argsort(self.uniform(rows, n), axis=1, kind="stable").astype(np.int64)
