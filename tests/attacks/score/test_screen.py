"""Adaptive Square's screen: a similarity detector the attacker assumes, run on its own side."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bbattack import AttackResult, CallableClassifier, Oracle, Scores
from bbattack.attacks import registry
from bbattack.attacks.score._screen import make_screen, remember
from bbattack.defenses import Blacklight, Piha
from bbattack.defenses._base import Detector
from bbattack.oracle import Query
from defense_support import tiny_rgb_rows
from support import FloatArray, check_batch_and_seeds

SPECS = ["piha", "piha:threshold=0.1,grid=4", "blacklight", "blacklight:window=50,hash=mix64"]


def _detector(spec: str) -> Detector:
    if spec.startswith("piha"):
        return Piha(threshold=0.1, grid=4) if "grid" in spec else Piha()
    return Blacklight(window=50, hash="mix64") if "mix64" in spec else Blacklight()


def _near(photos: FloatArray, seed: int, n: int) -> FloatArray:
    """``n`` images: three photos with small and large changes, then the first again."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n - 1):
        p = photos[rng.integers(3)]
        scale = rng.choice([0.0, 0.004, 0.02, 0.2])
        out.append(np.clip(p + scale * rng.standard_normal(p.shape), 0, 1))
    return np.asarray([*out, out[0]], np.float32)


@pytest.mark.parametrize("spec", SPECS)
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_the_screen_flags_what_the_detector_flags(
    colour_photos: FloatArray, spec: str, seed: int
) -> None:
    screen, det = make_screen(spec), _detector(spec)
    held, owner = np.zeros((0, screen.width), np.uint64), np.zeros(0, np.int64)
    mine, theirs = [], []
    for img in _near(colour_photos, seed, 12):
        mine.append(screen.flags(held, screen.key(img)))
        theirs.append(bool(det.flags(Query(img[None], np.zeros(1, np.int64), "init", Scores()))[0]))
        held, owner = remember(screen, held, owner, img[None], np.zeros(1, np.int64))
    assert mine == theirs
    assert any(theirs)  # not vacuous: the last image is sent twice


def test_the_screen_flags_at_the_detectors_thresholds_and_not_one_short() -> None:
    piha = make_screen("piha")  # 392 bits, flagged at a distance of 19 or less
    zero = np.zeros((1, piha.width), np.uint64)
    assert piha.flags(zero, np.array([2**19 - 1] + [0] * (piha.width - 1), np.uint64))
    assert not piha.flags(zero, np.array([2**20 - 1] + [0] * (piha.width - 1), np.uint64))
    bl = make_screen("blacklight")  # S = 50, flagged at T = 25 shared hashes or more
    held = np.arange(1, 51, dtype=np.uint64)[None]
    for shared, flagged in ((25, True), (24, False)):
        key = np.concatenate([held[0, :shared], np.arange(1000, 1050 - shared, dtype=np.uint64)])
        assert bl.flags(held, key) == flagged
    short = np.zeros_like(held)  # an image with fewer windows: its padding is no hash
    assert not bl.flags(short, short[0])


@pytest.mark.parametrize(
    "config",
    [{"screen": s} for s in ("rnd:nu=0.02", "aaa", "stateful", "piha:threshold=2", "nope")]
    + [{"screen": "piha", "norm": "l2", "eps": 3.0}],
)
def test_only_a_similarity_detector_with_valid_parameters_can_be_screened(
    config: dict[str, Any],
) -> None:
    with pytest.raises(ValidationError):
        registry.build("adaptive-square", **config)


def test_each_image_is_screened_against_its_own_queries(colour_photos: FloatArray) -> None:
    model = tiny_rgb_rows()
    # A photo twice (two targets, say), and a loose threshold: a store shared by the batch
    # would flag draws near the twin's queries.
    x = colour_photos[[1, 1, 2, 2]]

    def run(rows: slice, seeds: list[int]) -> AttackResult:
        oracle = Oracle(model, Scores(), max_queries=150)
        attack = registry.build("adaptive-square", eps=0.05, screen="piha:threshold=0.2")
        return attack.run(oracle, x[rows], None, seed=seeds)

    check_batch_and_seeds(run)


def _run(
    model: CallableClassifier, x: FloatArray, layer: Detector, budget: int = 300, **config: Any
) -> AttackResult:
    oracle = Oracle(model, Scores(), max_queries=budget, middleware=[layer])
    res = registry.build("adaptive-square", eps=0.05, **config).run(oracle, x, None, seed=1)
    assert res.images[0].queries == oracle.total_queries <= budget
    return res


def test_a_draw_the_screen_flags_is_redrawn_not_sent(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray
) -> None:
    x = colour_photos[3:4]  # a photo neither run gets past in 300 queries
    plain, screened = Piha(), Piha()
    _run(tiny_rgb, x, plain)
    res = _run(tiny_rgb, x, screened, screen="piha")
    assert plain.rejected > 50  # without the screen, many steps are refused
    # With it, only a step whose draws were all flagged, and the final check (the kept
    # iterate sent again) can be; each refusal is paid.
    assert screened.rejected < plain.rejected // 10
    assert res.images[0].lost_queries == screened.rejected
