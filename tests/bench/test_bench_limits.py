"""Issue "Results a user can trust", part 5: a bench says how big its grid is before it starts
and asks for --yes above 100,000 cases, refuses strings in numeric axes and absurd budgets,
reads --checkpoint-every as `attack` does, and never counts an unattacked image a success."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from bbattack.bench import BenchDB
from bbattack.bench.config import parse_config
from bbattack.bench.db import CaseRow
from bbattack.bench.grid import build_cases, collect_images
from bbattack.cli import main
from bbattack.images import bundled_photos

TESTS = Path(__file__).resolve().parents[1]

TINY = """
seeds = [0]
[model]
factory = "bench_models:{factory}"
backend = "torch"
[images]
photos = ["coffee"]
[[attacks]]
name = "ql"
budget = [{budget}]
eps = [{eps}]
"""


@pytest.fixture(autouse=True)
def _importable_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    )
    monkeypatch.syspath_prepend(str(TESTS))


def write(tmp_path: Path, factory: str = "tiny_net", budget: str = "50", eps: str = "0.05") -> Path:
    p = tmp_path / "grid.toml"
    p.write_text(TINY.format(factory=factory, budget=budget, eps=eps))
    return p


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, err
    assert lines[-1].startswith("error: "), err
    assert "Traceback" not in err
    return lines[-1]


def test_a_huge_grid_is_refused_without_yes_before_anything_is_built(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 2,000 seeds x 100 radii x 10 budgets: 2,000,000 cases.
    eps = ", ".join(f"{e / 1000:g}" for e in range(1, 101))
    budget = ", ".join(str(b) for b in range(100, 1100, 100))
    cfg = write(tmp_path, budget=budget, eps=eps)
    cfg.write_text(cfg.read_text().replace("seeds = [0]", f"seeds = {list(range(2000))}"))
    db = tmp_path / "r.sqlite"
    t0 = time.perf_counter()
    assert main(["bench", str(cfg), "--db", str(db), "-q"]) == 2
    assert time.perf_counter() - t0 < 20
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    line = error_line(err)
    assert "2,000,000 cases" in line
    assert "--yes" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.toml"]
    # With --yes it goes on: the size is said first, then the grid is built (here a model
    # that cannot be made stops it before a case is).
    cfg.write_text(cfg.read_text().replace("tiny_net", "no_such_model"))
    assert main(["bench", str(cfg), "--db", str(db), "-q", "--yes"]) == 2
    err = capsys.readouterr().err
    assert "grid: 2,000,000 cases, at most 1,100,000,000 queries" in err
    assert "model.factory" in error_line(err)
    assert not db.exists()


def test_the_size_is_said_before_a_bench_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write(tmp_path, budget="50, 60", eps="0.05")
    db = tmp_path / "r.sqlite"
    assert main(["bench", str(cfg), "--db", str(db), "-q"]) == 0
    err = capsys.readouterr().err
    assert "grid: 2 cases, at most 110 queries; about 1 s at most with 1 worker" in err
    with BenchDB.open(db, create=False, read_only=True) as d:
        assert d.counts()[1] == 2


def test_the_count_is_the_grid_built(tmp_path: Path) -> None:
    from bbattack.bench.size import grid_size

    cfg = parse_config(
        {
            "seeds": [0, 1, 2],
            "images": {"photos": ["coffee", "camera", "chelsea"], "limit": 2},
            "targets": {"per_image": 2},
            "attacks": [
                {"name": "square", "budget": [50, 60], "goal": ["targeted", "untargeted"]},
                {"name": "pi", "k": [1, 3], "budget": [70], "eps": [0.05, 0.1], "seeds": [4]},
                {"name": "square", "budget": [80], "defense": ["none", "blacklight", "rnd"]},
            ],
        }
    )
    images = collect_images(cfg, tmp_path, (8, 8))
    rows = build_cases(cfg, images, {"coffee": 4, "camera": 5}, 10, str)
    size = grid_size(cfg)
    assert size.cases == len(rows)
    assert size.queries == sum(r.budget for r in rows)


@pytest.mark.parametrize(
    ("axis", "value", "field"),
    [
        ("eps", '["0.05"]', "attacks[0].eps[0]"),
        ("budget", '["100"]', "attacks[0].budget[0]"),
        ("k", '["1"]', "attacks[0].k[0]"),
        ("seeds", '["0"]', "attacks[0].seeds[0]"),
        ("eps", "[true]", "attacks[0].eps[0]"),
        ("budget", f"[{10**12}]", "budget must be <= 10,000,000"),
    ],
)
def test_strings_and_absurd_budgets_in_numeric_axes_are_refused(
    axis: str, value: str, field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write(tmp_path)
    text = cfg.read_text()
    if axis in ("eps", "budget"):
        text = "\n".join(
            f"{axis} = {value}" if line.startswith(f"{axis} =") else line
            for line in text.splitlines()
        )
    else:
        text += f"{axis} = {value}\n"
    cfg.write_text(text)
    assert main(["bench", str(cfg), "--db", str(tmp_path / "r.sqlite"), "-q"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert field in error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.toml"]


def test_checkpoint_every_reads_the_same_in_attack_and_bench(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write(tmp_path)
    photo = str(bundled_photos()["coffee"])
    attack = ["attack", photo, "--untargeted", "--out", str(tmp_path / "o")]
    bench = ["bench", str(cfg), "--db", str(tmp_path / "r.sqlite"), "-q"]
    said = []
    for argv in (attack, bench):
        assert main([*argv, "--checkpoint-every", "soon"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1
        said.append(error_line(err))
    assert said[0] == said[1]
    assert "off" in said[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.toml"]
    assert main([*bench, "--checkpoint-every", "OFF"]) == 0
    assert not (tmp_path / "r.sqlite.work").exists()


def test_a_bench_case_already_in_its_target_class_is_no_success() -> None:
    from bbattack.bench.runner import Task, run_task
    from bbattack.images import encode_png, load_image
    from bench_models import tiny_net

    model = tiny_net()
    x = load_image(bundled_photos()["coffee"], (32, 32))
    clean = int(model(x[None]).argmax(axis=1)[0])
    case = CaseRow(
        *("c0", 0, "ql", "ql", 0, "linf", 0.05, 50, "coffee", clean, None, None, 0, "{}")
    )
    spec = {"name": None, "factory": "bench_models:tiny_net", "backend": "torch"}
    (o,) = run_task(Task(case, spec, encode_png(x), None))
    assert (o.success, o.stop_reason, o.queries_at_success) == (False, "already", None)


def test_an_older_database_success_that_moved_nothing_reads_as_already(tmp_path: Path) -> None:
    cfg = write(tmp_path, budget="50, 60")
    db = tmp_path / "r.sqlite"
    assert main(["bench", str(cfg), "--db", str(db), "-q"]) == 0
    con = sqlite3.connect(db)
    with con:  # what an older bbattack wrote for an image already in its target class
        con.execute(
            "UPDATE cases SET success = 1, linf = 0, l2 = 0, stop_reason = 'success', "
            "queries_at_success = 1 WHERE idx = 0"
        )
        con.execute("UPDATE cases SET success = 1, linf = 0.05 WHERE idx = 1")
    con.close()
    with BenchDB.open(db, create=False, read_only=True) as d:
        old, real = d.cases()
        assert d.counts()[2] == 1
    assert (old["success"], old["stop_reason"], old["queries_at_success"]) == (
        False,
        "already",
        None,
    )
    assert real["success"] is True
