"""Blacklight (Li, Shan, Wenger, Zhang, Zheng, Zhao, USENIX Security 2022, arXiv 2006.14042):
an account-oblivious detector of query attacks by probabilistic content fingerprints.

Each query image is quantised (pixel values in steps of ``step`` of 255), flattened (HWC
order, as the paper's images are stored), and cut into overlapping windows of ``window``
values, ``stride`` apart (the paper: 20 on CIFAR-size images, 50 on ImageNet-size ones,
stride 1). Each window is hashed with SHA-256; the fingerprint is the ``top`` (S = 50)
numerically largest distinct hashes, each truncated to its first 8 bytes (400 bytes; the paper
keeps whole hashes, 1.6 KB; 64 bits leave a chance collision negligible at these sizes). A
query is flagged when some stored fingerprint shares at least ``threshold`` (T = 25) hashes
with its own. Taking the largest hashes picks the same pseudo-random sample of windows from
two images wherever they agree: an attack's queries differ from each other in few windows,
so they share most of their top hashes; different photos share almost none.

SHA-256 over every window of an ImageNet-size image costs about 0.4 s a query in Python;
``hash=mix64`` hashes the windows with a vectorised 64-bit mixer instead (same selection
statistics, about 40 ms).

Every query's fingerprint is stored, whatever the key (account-oblivious), flagged or not.
The store is bounded: ``reset`` clears it every so many queries (the paper: every 24 hours;
a deterministic run counts queries, not time), and ``capacity`` drops the oldest half of the
fingerprints when it is full. Lookup is an inverted index (hash -> fingerprint ids, in
sorted numpy runs) with counting, never a scan over the fingerprints: 600 bytes per stored
query (50 pairs of a uint64 hash and an int32 id), about 600 MB per million queries.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..oracle import Query
from ._base import Action, BoolArray, Detector, check
from ._index import PostingIndex

__all__ = ["Blacklight", "fingerprint"]

U64 = NDArray[np.uint64]
Hash = Literal["sha256", "mix64"]
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplication by it is a bijection mod 2^64


def fingerprint(
    x: NDArray[np.floating],
    step: int = 50,
    window: int = 20,
    stride: int = 1,
    top: int = 50,
    hash: Hash = "sha256",
) -> U64:
    """The Blacklight fingerprint of one image (C, H, W) in [0, 1]: the ``top`` largest
    distinct window hashes (uint64, descending); fewer where the image has fewer windows."""
    u8 = np.clip(np.rint(np.asarray(x, np.float64) * 255.0), 0, 255).astype(np.uint8)
    flat = (np.moveaxis(u8, 0, -1) // np.uint8(step)).ravel()  # HWC, as the paper's images
    if len(flat) < window:
        flat = np.concatenate([flat, np.zeros(window - len(flat), np.uint8)])
    hashes = _mix64(flat, window, stride) if hash == "mix64" else _sha256(flat, window, stride)
    return np.sort(np.unique(hashes))[::-1][:top].copy()


def _sha256(flat: NDArray[np.uint8], window: int, stride: int) -> U64:
    data, sha = flat.tobytes(), hashlib.sha256
    seen = {data[i : i + window] for i in range(0, len(data) - window + 1, stride)}
    return np.fromiter(
        (int.from_bytes(sha(w).digest()[:8], "big") for w in seen), np.uint64, len(seen)
    )


def _mix64(flat: NDArray[np.uint8], window: int, stride: int) -> U64:
    """A vectorised 64-bit hash per window: the polynomial sum_j v[i + j] b^j (uint64
    arithmetic, wrapping) from prefix sums, then splitmix64's finaliser so that the largest
    values are a uniform sample. Equal windows hash equal, as with SHA-256."""
    n = len(flat)
    with np.errstate(over="ignore"):
        b_pow = np.cumprod(np.full(n, _MULT, np.uint64)) * _INV  # b^t, t = 0..n-1
        a_pow = np.cumprod(np.full(n, _INV, np.uint64)) * _MULT  # b^-t
        pre = np.concatenate([[np.uint64(0)], np.cumsum(flat * b_pow, dtype=np.uint64)])
        starts = np.arange(0, n - window + 1, stride)
        h = (pre[starts + window] - pre[starts]) * a_pow[starts] + np.uint64(window)
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return np.asarray(h ^ (h >> np.uint64(31)), np.uint64)


def _inverse(a: int) -> int:
    """a^-1 mod 2^64 for odd a (Newton's iteration doubles the correct bits each time)."""
    x = a
    for _ in range(6):
        x = (x * (2 - a * x)) % 2**64
    return x


_INV = np.uint64(_inverse(int(_MULT)))


class Blacklight(Detector):
    """Blacklight as a middleware. ``reset``: clear the store every so many queries (None:
    never); ``capacity``: the most fingerprints held (the oldest half goes when full)."""

    name = "blacklight"

    def __init__(
        self,
        step: int = 50,
        window: int = 20,
        stride: int = 1,
        top: int = 50,
        threshold: int = 25,
        reset: int | None = None,
        capacity: int = 1_000_000,
        hash: Hash = "sha256",
        action: Action = "reject",
        noise: float = 0.0,
    ) -> None:
        super().__init__(action, noise)
        check(1 <= step <= 255, f"blacklight: step must be in [1, 255], got {step}")
        check(window >= 1 and stride >= 1, "blacklight: window and stride must be >= 1")
        check(1 <= threshold <= top, f"blacklight: need 1 <= T <= S, got T={threshold}, S={top}")
        check(reset is None or reset >= 1, f"blacklight: reset must be >= 1, got {reset}")
        check(capacity >= 2, f"blacklight: capacity must be >= 2, got {capacity}")
        self.step, self.window, self.stride, self.top = step, window, stride, top
        self.threshold, self.reset, self.capacity = threshold, reset, capacity
        self.hash: Hash = hash
        self._index = PostingIndex()
        self._next = 0  # the next fingerprint's id
        self._oldest = 0  # the oldest id still held
        self._since_reset = 0

    def params(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "window": self.window,
            "stride": self.stride,
            "top": self.top,
            "threshold": self.threshold,
            "reset": self.reset,
            "capacity": self.capacity,
            "hash": self.hash,
            **super().params(),
        }

    @property
    def stored(self) -> int:
        """Fingerprints held."""
        return self._next - self._oldest

    @property
    def nbytes(self) -> int:
        """Bytes the store holds."""
        return self._index.nbytes

    def match(self, fp: U64) -> int:
        """The most hashes any stored fingerprint shares with ``fp``."""
        ids = self._index.ids_of(fp)
        if not len(ids):
            return 0
        # Windows common to many photos (dark, flat regions) make long id lists: at 1M stored
        # photos, ~200k ids a query. Counting into an array over the held ids is then cheaper
        # than sorting them.
        if 8 * len(ids) >= self.stored:
            return int(np.bincount(ids - self._oldest).max())
        return int(np.unique(ids, return_counts=True)[1].max())

    def flags(self, query: Query) -> BoolArray:
        out = np.zeros(len(query.x), bool)
        for j, img in enumerate(query.x):
            if self.reset is not None and self._since_reset >= self.reset:
                self._index.clear()
                self._oldest, self._since_reset = self._next, 0
            fp = fingerprint(img, self.step, self.window, self.stride, self.top, self.hash)
            out[j] = self.match(fp) >= self.threshold
            if self.stored >= self.capacity:
                self._oldest = self._next - self.capacity // 2
                self._index.drop_below(self._oldest)
            self._index.add(fp, self._next)
            self._next += 1
            self._since_reset += 1
        return out

    def snapshot(self) -> dict[str, Any]:
        return {
            **super().snapshot(),
            "index": self._index.snapshot(),
            "next": self._next,
            "oldest": self._oldest,
            "since_reset": self._since_reset,
        }

    def restore(self, snap: dict[str, Any]) -> None:
        super().restore(snap)
        self._index.restore(snap["index"])
        self._next, self._oldest = int(snap["next"]), int(snap["oldest"])
        self._since_reset = int(snap["since_reset"])
