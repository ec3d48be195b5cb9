"""An inverted index of ``(key, id)`` pairs in sorted numpy runs (a small log-structured
merge tree): appends are O(1) amortised, a lookup is a binary search per run, and memory is
12 bytes per pair (a uint64 key, an int32 id), with no Python object per entry.

Blacklight files each fingerprint's hashes under its id and counts, per stored id, how many of
a query's hashes it holds; PIHA files each hash's chunks and verifies the ids found.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["MAX_RUN", "PostingIndex"]

U64 = NDArray[np.uint64]
I32 = NDArray[np.int32]
_BUFFER = 4096  # pairs held unsorted before they are sealed into a sorted run
# No merge makes a run longer than this: a merge runs inside one query, and merging two runs
# of 50M and 25M pairs took 3 s (2 shared cores); 8M pairs bound it near 0.3 s, at the price
# of a few more runs to search (about 7 at a million Blacklight queries).
MAX_RUN = 1 << 23


class PostingIndex:
    """Pairs ``(key, id)``; :meth:`ids_of` answers every id filed under any of some keys."""

    def __init__(self) -> None:
        self._runs: list[tuple[U64, I32]] = []
        self._buf_k = np.zeros(_BUFFER, np.uint64)
        self._buf_i = np.zeros(_BUFFER, np.int32)
        self._fill = 0

    def __len__(self) -> int:
        return self._fill + sum(len(k) for k, _ in self._runs)

    @property
    def nbytes(self) -> int:
        """Bytes held by the pairs (runs and buffer)."""
        runs = sum(k.nbytes + i.nbytes for k, i in self._runs)
        return runs + self._buf_k.nbytes + self._buf_i.nbytes

    def add(self, keys: U64, ident: int) -> None:
        """File ``keys`` under ``ident``."""
        keys = np.asarray(keys, np.uint64)
        at = 0
        while at < len(keys):
            room = min(_BUFFER - self._fill, len(keys) - at)
            self._buf_k[self._fill : self._fill + room] = keys[at : at + room]
            self._buf_i[self._fill : self._fill + room] = ident
            self._fill += room
            at += room
            if self._fill == _BUFFER:
                self._seal()

    def ids_of(self, keys: U64) -> I32:
        """Every id filed under each of ``keys`` (an id once per key it holds)."""
        keys = np.asarray(keys, np.uint64)
        found = [self._buf_i[: self._fill][np.isin(self._buf_k[: self._fill], keys)]]
        for k, i in self._runs:
            lo = np.searchsorted(k, keys, "left")
            hi = np.searchsorted(k, keys, "right")
            hit = hi > lo
            if hit.any():
                found.extend(i[a:b] for a, b in zip(lo[hit], hi[hit], strict=True))
        return np.concatenate(found).astype(np.int32, copy=False)

    def drop_below(self, ident: int) -> None:
        """Forget every pair whose id is below ``ident`` (the oldest entries)."""
        keep = self._buf_i[: self._fill] >= ident
        n = int(keep.sum())
        self._buf_k[:n] = self._buf_k[: self._fill][keep]
        self._buf_i[:n] = self._buf_i[: self._fill][keep]
        self._fill = n
        runs = [(k[i >= ident], i[i >= ident]) for k, i in self._runs]
        self._runs = [r for r in runs if len(r[0])]

    def clear(self) -> None:
        self._runs, self._fill = [], 0

    def _seal(self) -> None:
        order = np.argsort(self._buf_k[: self._fill], kind="stable")
        self._runs.append((self._buf_k[order], self._buf_i[order]))
        self._fill = 0
        # Merge while the newest run is at least half the size of the one before it: the runs
        # shrink geometrically, so there are O(log n) of them below MAX_RUN.
        while (
            len(self._runs) >= 2
            and 2 * len(self._runs[-1][0]) >= len(self._runs[-2][0])
            and len(self._runs[-1][0]) + len(self._runs[-2][0]) <= MAX_RUN
        ):
            (k1, i1), (k2, i2) = self._runs[-2], self._runs[-1]
            k, i = np.concatenate([k1, k2]), np.concatenate([i1, i2])
            order = np.argsort(k, kind="stable")
            self._runs[-2:] = [(k[order], i[order])]

    # -- plain data for checkpoints

    def snapshot(self) -> dict[str, Any]:
        ks = [k for k, _ in self._runs] + [self._buf_k[: self._fill].copy()]
        ids = [i for _, i in self._runs] + [self._buf_i[: self._fill].copy()]
        return {"keys": np.concatenate(ks), "ids": np.concatenate(ids)}

    def restore(self, snap: dict[str, Any]) -> None:
        keys = np.asarray(snap["keys"], np.uint64)
        ids = np.asarray(snap["ids"], np.int32)
        self.clear()
        if len(keys):
            order = np.argsort(keys, kind="stable")
            self._runs = [(keys[order], ids[order])]
