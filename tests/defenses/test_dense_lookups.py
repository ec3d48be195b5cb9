"""Lookups where many stored queries share index keys (common windows, flat hue), as a store of
benign photos has: Blacklight's counts and PIHA's distances equal a scan's, on the path for
long id lists and on the one for short ones, with the oldest entries dropped."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bbattack.defenses import Blacklight, Piha

OLDEST, NEXT = 700, 2700  # the ids held, as after a capacity drop


def _restored(det: Blacklight | Piha, keys: Any, ids: Any, **extra: Any) -> None:
    det.restore(
        {
            **det.snapshot(),
            "index": {"keys": np.asarray(keys, np.uint64), "ids": np.asarray(ids, np.int32)},
            "next": NEXT,
            "oldest": OLDEST,
            "since_reset": NEXT - OLDEST,
            **extra,
        }
    )


def test_blacklight_counts_shared_hashes_as_a_scan_would() -> None:
    rng = np.random.default_rng(5)
    hot = rng.integers(1, 2**63, 30, dtype=np.int64).astype(np.uint64)
    held = {}
    for i in range(OLDEST, NEXT):
        # Up to 20 hashes common to many photos, the rest unique to this one.
        common = hot[rng.random(30) < 0.4][:20]
        own = rng.integers(2**63, 2**64 - 1, 50 - len(common), dtype=np.uint64)
        held[i] = np.concatenate([common, own])
    bl = Blacklight(capacity=10_000)
    keys = np.concatenate(list(held.values()))
    _restored(bl, keys, np.repeat(list(held), [len(v) for v in held.values()]))
    assert bl.stored == NEXT - OLDEST
    probes = [
        hot[:25],  # thousands of ids: the counting path
        np.concatenate([held[OLDEST + 3][20:45], rng.integers(1, 2**63, 25).astype(np.uint64)]),
        rng.integers(1, 2**63, 50).astype(np.uint64),  # nothing shared
    ]
    for fp in probes:
        want = max(len(set(fp.tolist()) & set(h.tolist())) for h in held.values())
        assert bl.match(fp) == want
    assert len(bl._index.ids_of(probes[0])) * 8 >= bl.stored  # the paths meant
    assert 0 < len(bl._index.ids_of(probes[1])) * 8 < bl.stored


@pytest.mark.parametrize("dense", [True, False])
def test_piha_finds_the_nearest_candidate_as_a_scan_would(dense: bool) -> None:
    rng = np.random.default_rng(6)
    piha = Piha(capacity=10_000)
    bits = rng.random((NEXT - OLDEST, piha.bits)) < 0.5
    first = piha._bounds[0]
    bits[: 3 * len(bits) // 4, first] = False  # a chunk most stored hashes share (flat hue)
    chunks = np.stack([piha._chunks(b) for b in bits])
    ids = np.repeat(np.arange(OLDEST, NEXT), chunks.shape[1])
    hashes = np.stack([piha._pack(b) for b in bits])
    _restored(piha, chunks.ravel(), ids, hashes=hashes)
    probe = bits[len(bits) - 5].copy()  # a stored hash that lacks the common chunk
    flip = rng.choice(np.arange(first[-1] + 1, piha.bits), 7, replace=False)
    probe[flip] = ~probe[flip]
    if dense:
        probe[first] = False
    keys = set(piha._chunks(probe).tolist())
    shares = [bool(keys & set(c.tolist())) for c in chunks]
    want = min(int((probe != b).sum()) for b, s in zip(bits, shares, strict=True) if s)
    assert piha.distance(probe) == want
    assert dense or want == 7
    n_ids = len(piha._index.ids_of(piha._chunks(probe)))
    assert (32 * n_ids >= piha.stored) == dense  # the path meant
