"""Stateful detection (Chen, Carlini, Wagner, "Stateful Detection of Black-Box Adversarial
Attacks", 2019, arXiv 1907.05587): each account's queries are kept as embeddings; a query whose
mean distance to its ``k`` (50) nearest earlier queries of the same key is below
``threshold`` is flagged, and (the paper's action) the key is banned and its history cleared.

The paper trains a similarity encoder. We download nothing and train nothing: the encoder is
fixed and data-free, an area average down to at most 32 x 32 per channel followed by a Gaussian
random projection to ``dim`` dimensions (seeded by ``seed``), scaled so that distances between
embeddings approximate the RMS pixel difference between the averaged images (Johnson-
Lindenstrauss). A query attack's images are a few small changes apart; different photos are
tenths apart. The history per key holds at most ``history`` embeddings (the oldest go first):
``dim`` float32 each, 256 bytes at 64 dimensions, 256 MB per million queries held.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..oracle import Query
from ._base import Action, BoolArray, Detector, check

__all__ = ["Stateful", "embed"]

FloatArray = NDArray[np.float32]
_SIDE = 32


def _area_average(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """(C, H, W) averaged over blocks down to at most 32 x 32."""
    _, h, w = x.shape
    rows = np.array_split(np.arange(h), min(h, _SIDE))
    cols = np.array_split(np.arange(w), min(w, _SIDE))
    tmp = np.stack([x[:, r[0] : r[-1] + 1].mean(axis=1) for r in rows], axis=1)
    out = np.stack([tmp[:, :, c[0] : c[-1] + 1].mean(axis=2) for c in cols], axis=2)
    return np.asarray(out, np.float64)


@lru_cache(maxsize=8)
def _projection(size: int, dim: int, seed: int) -> NDArray[np.float64]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, size, dim]))
    # E|Pv|^2 = dim |v|^2 for N(0, 1) entries: 1/sqrt(dim * size) makes |Pv| ~ RMS(v).
    p: NDArray[np.float64] = rng.standard_normal((dim, size)) / np.sqrt(dim * size)
    return p


def embed(x: NDArray[np.floating], dim: int = 64, seed: int = 0) -> FloatArray:
    """Embeddings (N, dim) of images (N, C, H, W)."""
    avg = np.stack([_area_average(np.asarray(img, np.float64)).ravel() for img in x])
    p = _projection(avg.shape[1], dim, seed)
    return np.asarray(avg @ p.T, np.float32)


class Stateful(Detector):
    """Per-key k-nearest-neighbour detection over query embeddings."""

    name = "stateful"

    def __init__(
        self,
        k: int = 50,
        threshold: float = 0.02,
        dim: int = 64,
        history: int = 10_000,
        seed: int = 0,
        action: Action = "ban",
        noise: float = 0.0,
    ) -> None:
        super().__init__(action, noise)
        check(k >= 1 and dim >= 1, f"stateful: need k >= 1 and dim >= 1, got k={k}, dim={dim}")
        check(threshold > 0, f"stateful: threshold must be > 0, got {threshold}")
        check(history >= k, f"stateful: history must be >= k, got {history} < {k}")
        self.k, self.threshold, self.dim = k, threshold, dim
        self.history, self.seed = history, seed
        self._held: dict[str, FloatArray] = {}  # key -> (n, dim), oldest first

    def params(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "threshold": self.threshold,
            "dim": self.dim,
            "history": self.history,
            "seed": self.seed,
            **super().params(),
        }

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._held.values())

    def mean_knn(self, key: str, e: FloatArray) -> float:
        """Mean distance from embedding ``e`` to its ``k`` nearest in ``key``'s history
        (infinite while the history holds fewer than ``k``)."""
        held = self._held.get(key)
        if held is None or len(held) < self.k:
            return float("inf")
        d = np.sqrt(((held - e) ** 2).sum(axis=1))
        return float(np.partition(d, self.k - 1)[: self.k].mean())

    def flags(self, query: Query) -> BoolArray:
        emb = embed(query.x, self.dim, self.seed)
        out = np.zeros(len(emb), bool)
        for j, e in enumerate(emb):
            out[j] = self.mean_knn(query.key, e) < self.threshold
            held = self._held.get(query.key, np.zeros((0, self.dim), np.float32))
            keep = held[max(0, len(held) - self.history + 1) :]
            self._held[query.key] = np.concatenate([keep, e[None]])
        return out

    def on_ban(self, key: str) -> None:
        self._held.pop(key, None)

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "held": {k: v.copy() for k, v in self._held.items()}}

    def restore(self, snap: dict[str, Any]) -> None:
        super().restore(snap)
        self._held = {str(k): np.asarray(v, np.float32) for k, v in snap["held"].items()}
