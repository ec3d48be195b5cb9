"""PIHA and stateful detection: a plain Square attack is caught quickly, different colour_photos
are not; PIHA's chunk index finds what a scan would."""

from __future__ import annotations

import numpy as np
import pytest

from bbattack import CallableClassifier, Oracle, Scores
from bbattack.attacks import registry
from bbattack.defenses import Detector, Piha, Stateful
from bbattack.defenses.piha import perceptual_bits
from bbattack.oracle import Query
from support import FloatArray


@pytest.mark.parametrize(
    ("layer", "within"), [(Piha(), 5), (Stateful(k=10), 40), (Stateful(), 200)]
)
def test_a_plain_square_attack_is_caught(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray, layer: Detector, within: int
) -> None:
    oracle = Oracle(tiny_rgb, Scores(), max_queries=400, middleware=[layer])
    r = registry.build("square", eps=0.05).run(oracle, colour_photos[:1], None, seed=1).images[0]
    assert r.stop_reason in ("rejected", "banned")
    assert layer.first_rejected_at == r.queries <= within


@pytest.mark.parametrize("layer", [Piha(), Stateful(k=3)])
def test_different_photos_are_not_flagged(colour_photos: FloatArray, layer: Detector) -> None:
    for p in [
        *colour_photos,
        *colour_photos[:, :, :, ::-1],
    ]:  # each photo, and then each one mirrored
        q = Query(p[None].copy(), np.zeros(1, np.int64), "init", Scores(), key="benign")
        assert not layer.flags(q).any()


def test_the_chunk_index_finds_every_hash_within_the_threshold(colour_photos: FloatArray) -> None:
    rng = np.random.default_rng(1)
    piha = Piha()
    held = []
    for p in colour_photos:
        bits = perceptual_bits(p)
        held.append(bits)
        piha.flags(Query(p[None], np.zeros(1, np.int64), "init", Scores()))
    for _ in range(200):
        base = held[rng.integers(len(held))].copy()
        flip = rng.choice(len(base), rng.integers(0, 40), replace=False)
        base[flip] = ~base[flip]
        scan = min(int((base != h).sum()) for h in held)
        got = piha.distance(base)
        assert got == scan if scan <= 19 else got > 19
