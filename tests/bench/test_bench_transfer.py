"""Surrogates in bench grids: validated before anything runs, part of a case's identity, passed
to the attack beside the oracle, and shown in the report as their own rows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bbattack.bench import BenchDB
from bbattack.bench.config import parse_config
from bbattack.cli import main
from bbattack.errors import UserInputError

TESTS = Path(__file__).resolve().parents[1]

GRID = """
name = "transfer-smoke"
seed = 0
[model]
factory = "bench_models:tiny_net"
backend = "torch"
[images]
photos = ["coffee", "chelsea", "camera", "flower"]
[targets]
pool = "images"
[[attacks]]
name = "square"
budget = [300]
eps = [0.1]
[[attacks]]
name = "transfer"
surrogates = ["bench_models:tiny_surrogate"]
budget = [300]
eps = [0.1]
params = { iters = 10 }
"""


@pytest.fixture(autouse=True)
def _importable_models(monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [str(TESTS), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))


def test_a_grid_with_surrogates_runs_and_reports_them(tmp_path: Path) -> None:
    cfg = tmp_path / "grid.toml"
    cfg.write_text(GRID)
    db_path = tmp_path / "r.sqlite"
    assert main(["bench", str(cfg), "--db", str(db_path), "-q"]) == 0
    with BenchDB.open(db_path, create=False, read_only=True) as db:
        rows = db.cases()
    guided = [r for r in rows if r["attack"] == "transfer"]
    assert len(guided) == 4
    assert all(r["status"] == "done" for r in rows)
    assert all(r["params"]["surrogates"] == ["bench_models:tiny_surrogate"] for r in guided)
    assert all(r["queries_by_kind"]["transfer"] >= 1 for r in guided)
    assert all(r["queries"] <= 300 for r in rows)
    # The surrogate work each guided case waited for is recorded; the others did none.
    work = [r["provenance"]["surrogate_work"] for r in guided]
    assert all(w["candidates"] >= 1 and w["iterations"] >= 10 for w in work)
    assert all(w["seconds"] >= 0 for w in work)
    assert all("surrogate_work" not in r["provenance"] for r in rows if r["attack"] != "transfer")
    md = tmp_path / "r.md"
    assert main(["report", str(db_path), "-o", str(md), "--format", "md"]) == 0
    text = md.read_text()
    # Markdown-escaped; the other parameters are part of the row's name
    assert r"transfer \[bench\_models:tiny\_surrogate; iters=10\]" in text
    assert "| square |" in text
    # What the guided cases cost besides queries, beside their queries; Square did no such work.
    table = text.split("#### Surrogate work")[1].split("####")[0]
    lines = [ln for ln in table.splitlines() if ln.startswith("| QL")]
    assert len(lines) == 1  # one attack with surrogates, one threat model
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    assert cells[1].startswith(r"transfer \[bench\_models:tiny\_surrogate")
    assert cells[2] == "4"
    assert cells[5].endswith(" s")  # surrogate time per candidate
    assert float(cells[6]) >= 1  # candidates per case
    html = tmp_path / "r.html"
    assert main(["report", str(db_path), "-o", str(html)]) == 0
    assert '<table id="surrogates">' in html.read_text()


def _grid(attack: dict[str, Any], model: str = "efficientnet-lite0") -> Any:
    return parse_config(
        {"model": {"name": model}, "images": {"photos": ["coffee"]}, "attacks": [attack]}
    )


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        ({"name": "transfer", "budget": [50]}, "transfer needs surrogates"),
        ({"name": "square", "budget": [50], "surrogates": ["lite1"]}, "does not use surrogates"),
        ({"name": "transfer", "budget": [50], "surrogates": ["lite0"]}, "the target itself"),
        ({"name": "transfer", "budget": [50], "surrogates": ["lite9"]}, "unknown model"),
        ({"name": "transfer", "budget": [50], "surrogates": ["lite1", "lite1"]}, "twice"),
    ],
)
def test_bad_surrogates_are_refused_naming_the_field(attack: dict[str, Any], message: str) -> None:
    with pytest.raises(UserInputError, match=message) as e:
        _grid(attack)
    assert str(e.value).startswith("attacks[0].surrogates")


def test_all_means_every_builtin_model_but_the_target() -> None:
    cfg = _grid({"name": "transfer", "budget": [50], "surrogates": ["all"]}, model="lite1")
    assert cfg.model.name == "efficientnet-lite1"
    assert cfg.attacks[0].surrogate_names(cfg.model.name) == ["lite0", "lite2", "squeezenet"]


def test_report_rows_say_when_a_surrogate_shares_the_targets_family() -> None:
    from bbattack.bench.summary import with_surrogate_labels

    cases = [
        {"attack": "transfer", "params": {"surrogates": ["lite2"]}},
        {"attack": "transfer", "params": {"surrogates": ["pkg:fn"], "iters": 5}},
        {"attack": "square", "params": {}},
        {"attack": "square", "params": {"schedule": "adaptive", "reuse": True}},
    ]
    out = [c["attack"] for c in with_surrogate_labels(cases, "efficientnet-lite0")]
    assert out == [
        "transfer [lite2; same family]",
        "transfer [pkg:fn; iters=5]",
        "square",
        "square [reuse=True; schedule=adaptive]",
    ]
    assert with_surrogate_labels(cases[:1], None)[0]["attack"] == "transfer [lite2]"


def test_guided_cases_under_labels_get_the_grids_start_image(tmp_path: Path) -> None:
    """As ``--start-image`` on the CLI: a surrogate-guided PI/LO targeted case is given the
    photo of its target class that PI-Square gets, instead of searching the bundled photos
    (which rarely show a package photo's target class). QL and untargeted cases batch as
    before, without one."""
    from bbattack.bench.runner import _tasks

    cfg = tmp_path / "grid.toml"
    cfg.write_text(
        GRID.replace('name = "transfer"\n', 'name = "transfer"\nthreat = ["ql", "pi"]\n')
        + '[[attacks]]\nname = "transfer"\nsurrogates = ["bench_models:tiny_surrogate"]\n'
        'threat = ["pi"]\ngoal = ["untargeted"]\nbudget = [300]\neps = [0.1]\n'
    )
    db_path = tmp_path / "r.sqlite"
    assert main(["bench", str(cfg), "--db", str(db_path), "-q", "--only", "square"]) == 0
    with BenchDB.open(db_path, create=False, read_only=True) as db:
        tasks = _tasks(db, db.pending())
    guided = [t for t in tasks if t.case.attack == "transfer"]
    pi_targeted = [t for t in guided if t.case.threat == "pi" and t.case.target_id >= 0]
    assert len(pi_targeted) == 4
    assert all(t.start_png is not None and not t.more for t in pi_targeted)
    others = [t for t in guided if t not in pi_targeted]
    assert all(t.start_png is None for t in others)
    assert any(len(t.cases) > 1 for t in others)  # QL targeted and PI untargeted still batch
