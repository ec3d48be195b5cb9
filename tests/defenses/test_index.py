"""The posting index behind Blacklight and PIHA: lookups find every id filed under a key,
whatever the runs look like, and no merge builds a run longer than MAX_RUN (a merge happens
inside one query, so its size is a latency bound)."""

from __future__ import annotations

import numpy as np
import pytest

from bbattack.defenses import _index
from bbattack.defenses._index import PostingIndex


def test_no_run_outgrows_the_cap_and_lookups_find_every_pair(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cap = 3 * _index._BUFFER
    monkeypatch.setattr(_index, "MAX_RUN", cap)
    rng = np.random.default_rng(0)
    index = PostingIndex()
    # 40k pairs, distinct within a row (a fingerprint's hashes are), widely shared across rows
    keys = np.stack([rng.choice(500, 20, replace=False) for _ in range(2_000)]).astype(np.uint64)
    for ident, k in enumerate(keys):
        index.add(k, ident)
    runs = index.snapshot()  # every pair, whatever the runs
    assert len(runs["keys"]) == len(index) == keys.size
    sizes = [len(k) for k, _ in index._runs]
    assert max(sizes) <= cap
    assert len(sizes) >= keys.size // cap  # the cap, not the geometric rule, bounded them
    for probe in (keys[0], keys[1_234], rng.choice(500, 20, replace=False).astype(np.uint64)):
        want = sorted(int(i) for i, row in enumerate(keys) for k in probe for v in row if v == k)
        assert sorted(index.ids_of(probe).tolist()) == want
