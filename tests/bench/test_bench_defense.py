"""Defences in bench grids: an axis per attack, part of a case's identity (a case without one
keeps its id), a fresh defence in front of the target for every case, its block in the case's
provenance, and its name in the report's row label."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from bbattack.bench import BenchDB
from bbattack.bench.config import load_config, parse_config
from bbattack.bench.grid import case_id
from bbattack.cli import main
from bbattack.errors import UserInputError

TESTS = Path(__file__).resolve().parents[1]

GRID = """
name = "defense-smoke"
seed = 0
[model]
factory = "bench_models:tiny_net"
backend = "torch"
[images]
photos = ["coffee", "chelsea"]
[[attacks]]
name = "square"
goal = ["untargeted"]
budget = [60]
defense = ["none", "blacklight", "piha:action=silent"]
[[attacks]]
name = "adaptive-square"
goal = ["untargeted"]
budget = [60]
defense = ["blacklight+rnd:nu=0.02"]
"""


@pytest.fixture(autouse=True)
def _importable_models(monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [str(TESTS), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))


def _undefended_ids(tmp_path: Path) -> set[str]:
    plain = GRID.split("[[attacks]]")[0] + '[[attacks]]\nname = "square"\ngoal = ["untargeted"]\n'
    cfg = tmp_path / "plain.toml"
    cfg.write_text(plain + "budget = [60]\n")
    db_path = tmp_path / "plain.sqlite"
    assert main(["bench", str(cfg), "--db", str(db_path), "-q"]) == 0
    with BenchDB.open(db_path, create=False, read_only=True) as db:
        return {str(r["id"]) for r in db.cases()}


def test_a_grid_with_a_defence_axis_runs_and_reports_it(tmp_path: Path) -> None:
    cfg = tmp_path / "grid.toml"
    cfg.write_text(GRID)
    db_path = tmp_path / "r.sqlite"
    assert main(["bench", str(cfg), "--db", str(db_path), "-q"]) == 0
    with BenchDB.open(db_path, create=False, read_only=True) as db:
        rows = db.cases()
    assert len(rows) == 2 * 3 + 2
    assert all(r["status"] == "done" and r["queries"] <= 60 for r in rows)
    undefended = [r for r in rows if "defense" not in r["params"]]
    assert len(undefended) == 2
    assert all("defense" not in r["provenance"] for r in undefended)
    bl = [r for r in rows if r["params"].get("defense", [{}])[0].get("name") == "blacklight"]
    assert len(bl) == 4
    for r in bl:
        block = r["provenance"]["defense"]
        layers = [la["name"] for la in block["layers"]]
        assert layers == [d["name"] for d in r["params"]["defense"]]
        assert block["layers"][0]["seen"] == r["queries"]  # its own store: this case's queries
    plain_bl = [r for r in bl if r["attack"] == "square"]
    # Plain Square meets its first refusal within a few queries, and stops there.
    assert any(r["stop_reason"] == "rejected" for r in plain_bl)
    assert all(r["provenance"]["defense"]["rejected"] == 1 for r in plain_bl)
    assert all(r["queries"] <= 10 for r in plain_bl)
    # A case without a defence keeps the id it had before the axis existed.
    assert {str(r["id"]) for r in undefended} == _undefended_ids(tmp_path)
    md = tmp_path / "r.md"
    assert main(["report", str(db_path), "-o", str(md), "--format", "md"]) == 0
    text = md.read_text()
    assert r"square \[vs blacklight\]" in text
    assert r"square \[vs piha:action=silent\]" in text
    assert r"adaptive-square \[vs blacklight+rnd\]" in text
    assert "| square |" in text
    # The defences table: plain Square against Blacklight caught on both photos.
    assert "#### Defences: detection" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| blacklight | square |"))
    assert "| 2/2 |" in row
    # The benign false positives, measured apart, fill the table's last column.
    fpr = tmp_path / "fpr.json"
    spec = {"spec": "blacklight", "fpr_without_resubmissions": 0.0168}
    fpr.write_text(json.dumps({"detectors": {"blacklight": spec}}))
    argv = ["report", str(db_path), "-o", str(md), "--format", "md", "--benign", str(fpr)]
    assert main(argv) == 0
    row = next(ln for ln in md.read_text().splitlines() if ln.startswith("| blacklight | square |"))
    assert row.endswith("| 1.68% |")


def _grid(attack: dict[str, Any]) -> Any:
    return parse_config(
        {
            "model": {"name": "efficientnet-lite0"},
            "images": {"photos": ["coffee"]},
            "attacks": [attack],
        }
    )


@pytest.mark.parametrize(
    ("defense", "message"),
    [
        (["shield"], "unknown defence"),
        (["blacklight:T=99"], "T <= S"),
        (["blacklight", "blacklight:T=25"], "twice"),
    ],
)
def test_bad_defences_are_refused_naming_the_field(defense: list[str], message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        _grid({"name": "square", "budget": [50], "defense": defense})


def test_the_defence_is_part_of_the_case_id() -> None:
    a = _grid({"name": "square", "budget": [50], "defense": ["blacklight"]}).attacks[0]
    b = _grid({"name": "square", "budget": [50], "defense": ["none"]}).attacks[0]
    assert a.case_params(None, a.defenses()[0]) != b.case_params(None, b.defenses()[0])
    assert b.case_params(None, b.defenses()[0]) == b.case_params(None)
    assert case_id({"params": a.case_params(None, a.defenses()[0])}) != case_id(
        {"params": b.case_params(None)}
    )


def test_adaptive_true_names_the_adaptive_version_and_the_same_cases(tmp_path: Path) -> None:
    named = tmp_path / "named.toml"
    named.write_text(GRID)
    sugar = tmp_path / "sugar.toml"
    sugar.write_text(GRID.replace('name = "adaptive-square"', 'name = "square"\nadaptive = true'))
    (a, _), (b, _) = load_config(named), load_config(sugar)
    assert b.attacks[1].name == "adaptive-square"
    assert a.digest() == b.digest()


def test_adaptive_true_without_an_adaptive_version_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(GRID.replace('name = "adaptive-square"', 'name = "rays"\nadaptive = true'))
    with pytest.raises(UserInputError, match=r"attacks\[1\].*no adaptive version"):
        load_config(cfg)
