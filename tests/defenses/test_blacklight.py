"""Blacklight: detects a plain Square attack at once, lets different colour_photos through, keeps
its store bounded and its index exact."""

from __future__ import annotations

import numpy as np
import pytest

from bbattack import CallableClassifier, Oracle, Scores
from bbattack.attacks import registry
from bbattack.defenses import Blacklight
from bbattack.defenses.blacklight import fingerprint
from bbattack.oracle import Query, QueryKind
from support import FloatArray


def _square(model: CallableClassifier, x: FloatArray, layer: Blacklight, budget: int = 300) -> int:
    oracle = Oracle(model, Scores(), max_queries=budget, middleware=[layer])
    r = registry.build("square", eps=0.05).run(oracle, x[:1], None, seed=1).images[0]
    assert r.queries == layer.seen == oracle.total_queries
    return r.queries


@pytest.mark.parametrize("hash_", ["sha256", "mix64"])
def test_a_plain_square_attack_is_rejected_within_a_few_queries(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray, hash_: str
) -> None:
    for x in colour_photos[:4]:
        bl = Blacklight(hash=hash_)  # type: ignore[arg-type]
        queries = _square(tiny_rgb, x[None], bl)
        assert bl.first_rejected_at is not None
        assert bl.first_rejected_at == queries <= 5  # the attack stops at the refusal
        assert bl.rejected == 1


def test_different_photos_with_their_own_variation_are_not_flagged(
    colour_photos: FloatArray,
) -> None:
    bl = Blacklight()
    for i, p in enumerate(colour_photos):
        # One variant of each photo: brightness, a shift, a flip, or the photo itself.
        v = [np.clip(p * 0.9, 0, 1), np.roll(p, 2, axis=2), p[:, :, ::-1], p][i % 4]
        v = np.rint(v * 255) / 255
        flags = bl.flags(Query(v[None].astype(np.float32), np.zeros(1, np.int64), "init", Scores()))
        assert not flags.any(), i
    assert bl.stored == len(colour_photos)


def test_the_fingerprint_is_bounded_and_the_store_too(colour_photos: FloatArray) -> None:
    fp = fingerprint(colour_photos[0])
    assert fp.dtype == np.uint64
    assert len(fp) == 50
    assert np.all(np.diff(fp.astype(np.float64)) < 0)  # distinct, largest first
    bl = Blacklight(capacity=8, reset=None)
    for i in range(30):
        x = colour_photos[i % len(colour_photos)][None] * 0.5 + i / 100
        bl.flags(Query(x, np.zeros(1, np.int64), "init", Scores()))
        assert bl.stored <= 8
    assert bl.nbytes < 8 * 50 * 12 + 4096 * 12 + 1  # pairs held, plus the unsorted buffer
    reset = Blacklight(reset=5)
    hits = [
        bool(reset.flags(Query(colour_photos[:1], np.zeros(1, np.int64), "init", Scores()))[0])
        for _ in range(12)
    ]
    assert reset.stored == 2  # cleared after the 5th and the 10th query
    assert hits == [False, True, True, True, True] * 2 + [False, True]


def test_the_index_counts_as_a_scan_over_every_fingerprint_would() -> None:
    rng = np.random.default_rng(3)
    pool = rng.integers(0, 2**63, 400, dtype=np.int64).astype(np.uint64)
    bl = Blacklight()
    stored: list[set[int]] = []
    for i in range(5000):  # more than one sealed run of the index
        fp = rng.choice(pool, 50, replace=False)
        if i % 97 == 0:
            got = bl.match(fp)
            want = max((len(set(fp.tolist()) & s) for s in stored), default=0)
            assert got == want
        bl._index.add(fp, bl._next)  # what flags() does after the check
        bl._next += 1
        stored.append(set(fp.tolist()))


def test_a_refused_query_is_charged_and_never_reaches_the_model(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray
) -> None:
    seen: list[int] = []

    def counting(x: FloatArray) -> FloatArray:
        seen.append(len(x))
        out: FloatArray = tiny_rgb.fn(x)
        return out

    model = CallableClassifier(counting, (3, 32, 32), 10)
    oracle = Oracle(model, Scores(), middleware=[Blacklight()])
    ids = oracle.register(1)
    oracle.query(colour_photos[:1], ids, QueryKind.INIT)
    with pytest.raises(Exception, match="rejected"):
        oracle.query(colour_photos[:1], ids, QueryKind.INIT)
    assert oracle.total_queries == 2
    assert oracle.lost_queries(0) == 1
    assert sum(seen) == 1
