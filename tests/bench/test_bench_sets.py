"""Package photo sets in a grid: only the photos the target qualifies become cases, ``limit``
counts after that, and the report states the denominator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bbattack.bench import BenchDB
from bbattack.bench.config import parse_config
from bbattack.bench.grid import collect_images, select_images
from bbattack.cli import main
from bbattack.errors import UserInputError

GRID = """
name = "sets"
seed = 0
[model]
factory = "bench_models:tiny_net"
backend = "torch"
[images]
sets = ["{set}"]
min_confidence = 0.2
limit = 3
[[attacks]]
name = "square"
budget = [20]
goal = ["untargeted"]
"""


def test_select_keeps_what_qualifies_then_limits(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "images": {"photos": ["coffee"], "sets": ["foolbox"], "limit": 2},
            "attacks": [{"name": "square", "budget": [10]}],
        }
    )
    images = collect_images(cfg, tmp_path, (8, 8))
    assert len(images) == 21  # the limit waits for qualification
    probs = np.full((21, 1000), 1e-4)
    probs[np.arange(21), [im.label if im.label is not None else 0 for im in images]] = 0.9
    probs[2, :] = 1e-3  # foolbox-01 (label 559) now has top-1 class 0: not its label
    probs[2, 0] = 0.9
    kept, report = select_images(cfg, images, probs)
    assert [im.name for im in kept] == ["coffee", "foolbox-00"]
    assert report["foolbox"]["offered"] == 20
    assert report["foolbox"]["qualified"] == 19
    assert report["foolbox"]["used"] == 1


def test_sets_are_validated() -> None:
    with pytest.raises(UserInputError, match="sets"):
        parse_config({"images": {"sets": ["imagenet"]}, "attacks": [{"name": "ql", "budget": [1]}]})
    with pytest.raises(UserInputError, match="twice"):
        parse_config(
            {"images": {"sets": ["foolbox", "foolbox"]}, "attacks": [{"name": "ql", "budget": [1]}]}
        )


def test_a_grid_over_a_set_reports_its_denominator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    cfg = tmp_path / "grid.toml"
    cfg.write_text(GRID.format(set="ai-benchmark"))
    db = tmp_path / "r.sqlite"
    assert main(["bench", str(cfg), "--db", str(db), "-q", "--yes"]) == 0
    with BenchDB.open(db, create=False, read_only=True) as ro:
        q = json.loads(ro.meta()["images_qualified"])["ai-benchmark"]
        n_images = len(ro.images())
    assert q["offered"] == 100
    assert q["used"] == n_images == 3
    assert 3 <= q["qualified"] <= 100
    md = tmp_path / "r.md"
    assert main(["report", str(db), "-o", str(md), "--format", "md"]) == 0
    assert f"ai-benchmark: {q['qualified']} of 100 photos qualify" in md.read_text()


def test_no_qualifying_photo_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    cfg = tmp_path / "grid.toml"
    # The tiny model has 10 classes: no foolbox photo's ImageNet label is among them.
    cfg.write_text(GRID.format(set="foolbox"))
    assert main(["bench", str(cfg), "--db", str(tmp_path / "r.sqlite"), "-q", "--yes"]) == 2
    assert "no photo qualifies" in capsys.readouterr().err
    assert not (tmp_path / "r.sqlite").exists()
