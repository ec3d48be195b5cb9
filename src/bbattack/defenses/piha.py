"""PIHA (Choi et al. 2023): query detection by perceptual image hashing, written from the
method's description (blur, HSV hue, block means, local binary patterns; a normalised Hamming
threshold of 0.05).

Our hash of an image (C, H, W):

1. a Gaussian blur (``sigma`` pixels, per channel) takes out the fine texture that a query
   attack's small changes live in;
2. the hue of HSV (in [0, 1); 0 where a pixel is grey), or the luminance of a 1-channel image,
   which has no hue;
3. the means of a ``grid`` x ``grid`` grid of blocks (7 x 7);
4. a local binary pattern over the block means: for each block, one bit per neighbour of its
   8 (edges repeated), set where the neighbour's mean is higher. 7 x 7 x 8 = 392 bits.

Hue is circular; the comparison treats it as a line (as a plain LBP would). Grey photos have
no hue, so their hashes are all zero and match each other: a property of hue hashing that the
false-positive figures show; ``channel=luma`` hashes the luminance instead.

Two hashes match when their normalised Hamming distance is below ``threshold``. The store is
account-oblivious like Blacklight's. Lookup is multi-index hashing: the bits are cut into
m = floor(threshold * bits) + 1 chunks, so that two hashes within the threshold agree exactly
on at least one chunk (pigeonhole); each chunk is filed in an inverted index, and only the
hashes found there are compared bit by bit. Store: about 50 bytes per hash plus 12 per chunk
(20 chunks at 392 bits): about 300 MB per million queries.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..oracle import Query
from ._base import Action, BoolArray, Detector, check
from ._index import PostingIndex

__all__ = ["Piha", "perceptual_bits"]

Channel = Literal["hue", "luma"]
_NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _hue(rgb: NDArray[np.float64]) -> NDArray[np.float64]:
    r, g, b = rgb
    mx, mn = rgb.max(axis=0), rgb.min(axis=0)
    d = np.where(mx > mn, mx - mn, 1.0)
    h = np.where(mx == r, (g - b) / d, np.where(mx == g, 2.0 + (b - r) / d, 4.0 + (r - g) / d))
    return np.where(mx > mn, (h / 6.0) % 1.0, 0.0)


def _blur(img: NDArray[np.float64], sigma: float) -> NDArray[np.float64]:
    """A separable Gaussian blur of (C, H, W) over H and W, edges repeated."""
    r = max(1, int(np.ceil(3 * sigma)))
    t = np.arange(-r, r + 1)
    g = np.exp(-(t**2) / (2 * sigma**2))
    g /= g.sum()
    pad = np.pad(img, ((0, 0), (r, r), (r, r)), mode="edge")
    h, w = img.shape[1:]
    rows = sum(g[i] * pad[:, i : i + h, :] for i in range(len(g)))
    return np.asarray(sum(g[i] * rows[:, :, i : i + w] for i in range(len(g))))


def _block_means(a: NDArray[np.float64], grid: int) -> NDArray[np.float64]:
    rows = np.array_split(np.arange(a.shape[0]), grid)
    cols = np.array_split(np.arange(a.shape[1]), grid)
    out = np.zeros((grid, grid))
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if len(r) and len(c):
                out[i, j] = a[r[0] : r[-1] + 1, c[0] : c[-1] + 1].mean()
    return out


def perceptual_bits(
    x: NDArray[np.floating], grid: int = 7, sigma: float = 1.0, channel: Channel = "hue"
) -> NDArray[np.bool_]:
    """The PIHA hash of one image (C, H, W) in [0, 1], as ``grid * grid * 8`` bits."""
    img = np.asarray(x, np.float64)
    if sigma > 0:
        img = _blur(img, sigma)
    if img.shape[0] == 3 and channel == "hue":
        plane = _hue(img)
    elif img.shape[0] == 3:
        plane = np.tensordot(np.array([0.299, 0.587, 0.114]), img, axes=1)
    else:
        plane = img.mean(axis=0)
    m = _block_means(plane, grid)
    pad = np.pad(m, 1, mode="edge")
    bits = [pad[1 + di : 1 + di + grid, 1 + dj : 1 + dj + grid] > m for di, dj in _NEIGHBOURS]
    return np.stack(bits, axis=-1).ravel()


class Piha(Detector):
    """PIHA as a middleware: flag a query whose hash is within ``threshold`` (normalised
    Hamming distance) of a stored one."""

    name = "piha"

    def __init__(
        self,
        threshold: float = 0.05,
        grid: int = 7,
        sigma: float = 1.0,
        channel: Channel = "hue",
        reset: int | None = None,
        capacity: int = 1_000_000,
        action: Action = "reject",
        noise: float = 0.0,
    ) -> None:
        super().__init__(action, noise)
        check(0.0 < threshold < 1.0, f"piha: threshold must be in (0, 1), got {threshold}")
        check(grid >= 2 and sigma >= 0, "piha: need grid >= 2 and sigma >= 0")
        check(channel in ("hue", "luma"), f"piha: channel must be hue or luma, got {channel}")
        check(reset is None or reset >= 1, f"piha: reset must be >= 1, got {reset}")
        check(capacity >= 2, f"piha: capacity must be >= 2, got {capacity}")
        self.threshold, self.grid, self.sigma, self.channel = threshold, grid, sigma, channel
        self.reset, self.capacity = reset, capacity
        self.bits = grid * grid * 8
        # Distances below threshold * bits are at most `limit`; limit + 1 chunks by pigeonhole.
        self._limit = math.ceil(threshold * self.bits) - 1
        self._bounds = np.array_split(np.arange(self.bits), self._limit + 1)
        self._words = (self.bits + 63) // 64
        self._index = PostingIndex()
        self._buf = np.zeros((64, self._words), np.uint64)  # rows [0, stored) are held
        self._next = self._oldest = self._since_reset = 0

    def params(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "grid": self.grid,
            "sigma": self.sigma,
            "channel": self.channel,
            "reset": self.reset,
            "capacity": self.capacity,
            **super().params(),
        }

    @property
    def stored(self) -> int:
        return self._next - self._oldest

    @property
    def nbytes(self) -> int:
        return self._index.nbytes + self.stored * self._words * 8

    def _chunks(self, bits: NDArray[np.bool_]) -> NDArray[np.uint64]:
        """One index key per chunk: its number, and 48 bits of a hash of its bits."""
        keys = []
        for c, idx in enumerate(self._bounds):
            h = hashlib.blake2b(np.packbits(bits[idx]).tobytes(), digest_size=6).digest()
            keys.append((c << 48) | int.from_bytes(h, "big"))
        return np.array(keys, np.uint64)

    def _pack(self, bits: NDArray[np.bool_]) -> NDArray[np.uint64]:
        raw = np.packbits(bits, bitorder="little")
        return np.frombuffer(raw.tobytes().ljust(self._words * 8, b"\0"), "<u8").copy()

    def distance(self, bits: NDArray[np.bool_]) -> int:
        """The smallest Hamming distance to a stored hash within the threshold (bits + 1
        where there is none)."""
        ids = self._index.ids_of(self._chunks(bits))
        if not len(ids):
            return self.bits + 1
        if 32 * len(ids) >= self.stored:  # common chunks (flat hue): a mask dedupes faster
            held = np.zeros(self.stored, bool)
            held[ids - self._oldest] = True
            rows: NDArray[np.integer] = np.flatnonzero(held)
        else:
            rows = np.unique(ids) - self._oldest
        x = np.bitwise_count(np.take(self._buf, rows, axis=0) ^ self._pack(bits))
        d = x[:, 0].astype(np.uint32)  # a hash may have more bits than uint16 counts
        for w in range(1, self._words):  # numpy's sum over a short last axis is much slower
            d += x[:, w]
        return int(d.min())

    def flags(self, query: Query) -> BoolArray:
        out = np.zeros(len(query.x), bool)
        for j, img in enumerate(query.x):
            if self.reset is not None and self._since_reset >= self.reset:
                self._drop(self._next)
                self._since_reset = 0
            bits = perceptual_bits(img, self.grid, self.sigma, self.channel)
            out[j] = self.distance(bits) <= self._limit
            if self.stored >= self.capacity:
                self._drop(self._next - self.capacity // 2)
            self._index.add(self._chunks(bits), self._next)
            if self.stored == len(self._buf):
                self._buf = np.concatenate([self._buf, np.zeros_like(self._buf)])
            self._buf[self.stored] = self._pack(bits)
            self._next += 1
            self._since_reset += 1
        return out

    def _drop(self, below: int) -> None:
        keep = self._buf[below - self._oldest : self.stored].copy()
        self._buf[: len(keep)] = keep
        self._oldest = below
        self._index.drop_below(below)

    def snapshot(self) -> dict[str, Any]:
        return {
            **super().snapshot(),
            "index": self._index.snapshot(),
            "hashes": self._buf[: self.stored].copy(),
            "next": self._next,
            "oldest": self._oldest,
            "since_reset": self._since_reset,
        }

    def restore(self, snap: dict[str, Any]) -> None:
        super().restore(snap)
        self._index.restore(snap["index"])
        held = np.asarray(snap["hashes"], np.uint64).reshape(-1, self._words)
        self._buf = np.zeros((max(64, 2 * len(held)), self._words), np.uint64)
        self._buf[: len(held)] = held
        self._next, self._oldest = int(snap["next"]), int(snap["oldest"])
        self._since_reset = int(snap["since_reset"])
