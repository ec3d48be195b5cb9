"""The tuning and held-out photo splits: a grid names one, alone (never mixed with the other
or with other photos), it expands to its package set and qualification rule, the report says
which split it was, and grids that do not use it keep their config hash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bbattack.bench import load_config
from bbattack.bench.config import parse_config
from bbattack.bench.grid import collect_images, select_images
from bbattack.bench.report import _qualified
from bbattack.errors import UserInputError

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
ATTACKS = [{"name": "square", "budget": [10]}]


def _grid(images: dict[str, Any]) -> dict[str, Any]:
    return {"images": images, "attacks": ATTACKS}


@pytest.mark.parametrize(
    "images",
    [
        {"split": "tuning", "sets": ["ai-benchmark"]},
        {"split": "heldout", "sets": ["foolbox"]},
        {"split": "heldout", "photos": ["coffee"]},
        {"split": "tuning", "paths": ["x.png"]},
    ],
)
def test_a_split_takes_nothing_beside_it(images: dict[str, Any]) -> None:
    with pytest.raises(UserInputError, match="never mixed"):
        parse_config(_grid(images))


def test_only_the_two_splits() -> None:
    with pytest.raises(UserInputError, match="split"):
        parse_config(_grid({"split": "test"}))


def test_the_tuning_split_is_foolbox_and_the_second_half_of_ai_benchmark(tmp_path: Path) -> None:
    cfg = parse_config(_grid({"split": "tuning", "limit": 3}))
    assert cfg.images.set_names() == ["foolbox", "ai-benchmark"]
    images = collect_images(cfg, tmp_path, (8, 8))
    fool = [im for im in images if im.set == "foolbox"]
    aib = [im for im in images if im.set == "ai-benchmark"]
    assert len(fool) == 20
    assert all(im.label is not None for im in fool)
    assert [im.name for im in aib] == [f"aib-{i:03d}" for i in range(50, 100)]
    probs = np.full((len(images), 1000), 1e-4)
    probs[np.arange(20), [im.label or 0 for im in fool]] = 0.9
    probs[0, :] = 1e-3  # photo 0's top-1 is not its label: it does not qualify
    probs[0, 0] = 0.9
    probs[20:, 5] = 0.3  # no ai-benchmark photo is confident enough
    kept, report = select_images(cfg, images, probs)
    assert [im.name for im in kept] == ["foolbox-01", "foolbox-02", "foolbox-03"]
    assert report["foolbox"]["split"] == "tuning"
    assert report["foolbox"]["qualified"] == 19
    assert report["ai-benchmark"]["qualified"] == 0
    assert _qualified(json.dumps(report)).startswith("tuning split, foolbox: 19 of 20")


def test_the_two_splits_share_no_photo(tmp_path: Path) -> None:
    names = {}
    for split in ("tuning", "heldout"):
        cfg = parse_config(_grid({"split": split}))
        names[split] = {im.name for im in collect_images(cfg, tmp_path, (8, 8))}
    assert not names["tuning"] & names["heldout"]
    assert {f"aib-{i:03d}" for i in range(50)} == names["heldout"]


def test_the_heldout_grid() -> None:
    cfg, _ = load_config(BENCHMARKS / "heldout.toml")
    assert cfg.images.split == "heldout"
    assert cfg.images.set_names() == ["ai-benchmark"]
    assert cfg.images.limit == 24
    assert cfg.targets.pool == "images"
    rows = {(a.name, a.threats()[0], a.goal[0], a.budget[0]) for a in cfg.attacks}
    assert ("pi-square", "pi", "targeted", 20_000) in rows
    assert ("rays", "lo", "untargeted", 10_000) in rows
    assert ("ta-square", "ql", "targeted", 10_000) in rows


def test_a_split_changes_the_hash_only_where_used() -> None:
    plain = parse_config(_grid({"sets": ["foolbox"]}))
    split = parse_config(_grid({"split": "tuning"}))
    assert plain.digest() != split.digest()
    # Grids from before the field keep theirs (see test_bench_digest for stored values).
    assert load_config(BENCHMARKS / "table1.toml")[0].digest() == "d989688b635a98e6"


def test_a_limited_split_takes_its_sets_in_turn(tmp_path: Path) -> None:
    cfg = parse_config(_grid({"split": "tuning", "limit": 4}))
    images = collect_images(cfg, tmp_path, (8, 8))
    probs = np.full((len(images), 1000), 1e-4)
    for i, im in enumerate(images):
        probs[i, im.label if im.label is not None else 5] = 0.9  # every photo qualifies
    kept, _ = select_images(cfg, images, probs)
    assert [im.name for im in kept] == ["foolbox-00", "aib-050", "foolbox-01", "aib-051"]
