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
from support import FloatArray

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
    held = np.zeros((0, screen.width), np.uint64)
    mine, theirs = [], []
    for img in _near(colour_photos, seed, 12):
        mine.append(screen.flags(held, screen.key(img)))
        theirs.append(bool(det.flags(Query(img[None], np.zeros(1, np.int64), "init", Scores()))[0]))
        held = remember(screen, held, img[None])
    assert mine == theirs
    assert any(theirs)  # not vacuous: the last image is sent twice


@pytest.mark.parametrize("spec", ["rnd:nu=0.02", "aaa", "stateful", "piha:threshold=2", "nope"])
def test_only_a_similarity_detector_with_valid_parameters_can_be_screened(spec: str) -> None:
    with pytest.raises(ValidationError):
        registry.build("adaptive-square", screen=spec)


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
