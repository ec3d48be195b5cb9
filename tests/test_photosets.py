"""Photo sets from packages: found without importing the package, labelled where the package
says so, and qualified per target model."""

from __future__ import annotations

import numpy as np
import pytest

from bbattack.errors import UserInputError
from bbattack.images import load_image
from bbattack.photosets import PHOTO_SETS, photo_set, qualify


def test_foolbox_photos_carry_their_imagenet_labels() -> None:
    photos = photo_set("foolbox")
    assert len(photos) == 20
    assert photos[0].name == "foolbox-00"
    assert photos[0].label == 243
    assert all(p.label is not None and 0 <= p.label < 1000 for p in photos)
    assert load_image(photos[0].path, 224).shape == (3, 224, 224)


def test_ai_benchmark_photos_are_unlabelled_and_ordered() -> None:
    photos = photo_set("ai-benchmark")
    assert len(photos) == 100
    assert [p.name for p in photos[:3]] == ["aib-000", "aib-001", "aib-002"]
    assert all(p.label is None for p in photos)


def test_every_set_has_unique_names() -> None:
    names = [p.name for s in PHOTO_SETS for p in photo_set(s)]
    assert len(names) == len(set(names))


def test_an_unknown_set_is_one_line() -> None:
    with pytest.raises(UserInputError, match="unknown photo set 'imagenet'; have: bundled"):
        photo_set("imagenet")


def test_qualify_keeps_labelled_matches_and_confident_unlabelled() -> None:
    probs = np.array(
        [
            [0.7, 0.2, 0.1],  # labelled 0, top-1 0: kept
            [0.7, 0.2, 0.1],  # labelled 1, top-1 0: dropped
            [0.4, 0.35, 0.25],  # unlabelled, unsure: dropped
            [0.1, 0.85, 0.05],  # unlabelled, sure: kept
        ]
    )
    keep, rule = qualify([0, 1, None, None], probs, 0.5)
    assert keep.tolist() == [True, False, False, True]
    assert "top-1 is the label" in rule
    assert "at least 0.5" in rule
