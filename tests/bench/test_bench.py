"""The benchmark harness end to end: grid expansion, the SQLite store, resume after SIGKILL,
worker processes and Ray giving the same results, and bad configs failing cleanly."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bbattack.bench import BenchDB, load_config
from bbattack.bench.config import parse_config
from bbattack.bench.db import CaseOutcome
from bbattack.bench.grid import collect_images, draw_targets
from bbattack.cli import _ray_argv, main
from bbattack.errors import UserInputError
from bbattack.images import decode_png

TESTS = Path(__file__).resolve().parents[1]

GRID = """
name = "smoke"
seed = 0
seeds = [0, 1]
[model]
factory = "bench_models:{factory}"
backend = "torch"
[images]
photos = ["coffee", "chelsea", "camera", "flower"]
[targets]
pool = "images"
[[attacks]]
name = "ql"
budget = [3000]
eps = [0.05, 0.1]
[[attacks]]
name = "pi"
k = [1, 3]
budget = [5000]
eps = [0.1]
"""
N_CASES = 4 * 2 * (2 + 2)  # images x seeds x (QL: 2 eps + PI: 2 k)


def write_grid(tmp_path: Path, factory: str = "tiny_net", text: str = GRID) -> Path:
    p = tmp_path / "grid.toml"
    p.write_text(text.format(factory=factory))
    return p


@pytest.fixture(autouse=True)
def _importable_models(monkeypatch: pytest.MonkeyPatch) -> None:
    # Worker processes and Ray workers import the factory by name.
    paths = [str(TESTS), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))


def results(db_path: Path) -> dict[int, tuple[Any, ...]]:
    """Per case: everything a rerun must reproduce (not wall times or worker names)."""
    with BenchDB.open(db_path, create=False, read_only=True) as db:
        rows = db.cases()
        return {
            r["idx"]: (
                r["success"],
                r["queries"],
                r["queries_at_success"],
                r["final_top1"],
                r["linf"],
                r["steps"],
                db.adv_png(r["id"]),
                tuple(s["queries"] for s in db.steps(r["id"])),
            )
            for r in rows
        }


@pytest.fixture(scope="module")
def serial_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("serial")
    os.environ["PYTHONPATH"] = str(TESTS)
    cfg = write_grid(tmp)
    assert main(["bench", str(cfg), "--db", str(tmp / "r.sqlite"), "-q"]) == 0
    return tmp / "r.sqlite"


def test_grid_runs_end_to_end(serial_db: Path) -> None:
    with BenchDB.open(serial_db, create=False, read_only=True) as db:
        done, total, ok = db.counts()
        assert (done, total) == (N_CASES, N_CASES)
        assert ok >= N_CASES // 2  # the tiny model is easy to fool
        meta = db.meta()
        assert meta["name"] == "smoke"
        assert len(meta["config_hash"]) == 16
        assert "numpy" in meta["versions"]
        assert "bbattack" in meta["versions"]
        assert meta["backend"] == "torch"
        images = db.images()
        cases = db.cases()
        assert {c["attack"] for c in cases} == {"ql", "pi"}
        assert {(c["threat"], c["k"]) for c in cases} == {("ql", 0), ("pi", 1), ("pi", 3)}
        for c in cases:
            # Targets never equal the clean class, and the start image shows the target.
            assert c["target_id"] != images[c["image"]]["clean_id"]
            assert images[c["start_image"]]["clean_id"] == c["target_id"]
            assert c["queries"] <= c["budget"]
            assert sum(c["queries_by_kind"].values()) == c["queries"]
            adv = decode_png(db.adv_png(c["id"]) or b"")
            x0 = decode_png(images[c["image"]]["png"])
            linf = float(np.abs(adv - x0).max())
            assert linf == pytest.approx(c["linf"], abs=1e-6)
            if c["success"]:
                assert linf <= c["eps"] + 1e-6
                assert c["final_top1"] == c["target_id"]
                assert c["queries_at_success"] <= c["queries"]
                steps = db.steps(c["id"])
                assert len(steps) == c["steps"] > 0
                assert [s["step"] for s in steps] == list(range(1, len(steps) + 1))


def test_same_targets_for_every_attack(serial_db: Path) -> None:
    with BenchDB.open(serial_db, create=False, read_only=True) as db:
        cases = db.cases(status=None)
    # Not vacuous: the whole grid is there, every image attacked by both attacks.
    assert len(cases) == N_CASES
    attacks: dict[str, set[str]] = {}
    targets: dict[str, set[int]] = {}
    for c in cases:
        attacks.setdefault(c["image"], set()).add(c["attack"])
        targets.setdefault(c["image"], set()).add(c["target_id"])
    assert len({c["attack"] for c in cases}) > 1
    assert set(attacks) == {"coffee", "chelsea", "camera", "flower"}
    assert all(a == {"ql", "pi"} for a in attacks.values())
    # One target an image, whichever attack, ε, k or seed the case has.
    assert {image: len(t) for image, t in targets.items()} == dict.fromkeys(attacks, 1)


def test_rerun_of_a_finished_grid_runs_nothing(serial_db: Path, tmp_path: Path) -> None:
    before = results(serial_db)
    cfg = write_grid(tmp_path)
    assert main(["bench", str(cfg), "--db", str(serial_db), "-q"]) == 0
    assert results(serial_db) == before


def test_targets_are_seeded_and_exclude_the_clean_class(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "images": {"photos": ["coffee", "chelsea", "camera"]},
            "targets": {"pool": "classes", "per_image": 8},
            "attacks": [{"name": "ql", "budget": [100]}],
        }
    )
    images = collect_images(cfg, tmp_path, (16, 16))
    clean = {"coffee": 3, "chelsea": 0, "camera": 9}
    t1 = draw_targets(cfg, images, clean, 10)
    assert t1 == draw_targets(cfg, images, clean, 10)
    for name, pairs in t1.items():
        assert all(t != clean[name] and 0 <= t < 10 and s is None for t, s in pairs)
        assert len({t for t, _ in pairs}) > 3  # actually random
    # Another image in the grid does not change these images' targets.
    more = collect_images(
        parse_config(
            {**cfg.model_dump(), "images": {"photos": ["coffee", "chelsea", "camera", "flower"]}}
        ),
        tmp_path,
        (16, 16),
    )
    t2 = draw_targets(cfg, more, {**clean, "flower": 5}, 10)
    assert all(t2[n] == t1[n] for n in t1)


def test_record_never_overwrites_a_finished_case(serial_db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.sqlite"
    with BenchDB.open(serial_db, create=False, read_only=True) as db:
        db.conn.execute(f"VACUUM INTO '{copy}'")
    with BenchDB.open(copy, create=False) as db:
        case = db.cases()[0]
        fake = CaseOutcome(
            case_id=case["id"],
            success=not case["success"],
            queries=1,
            queries_at_success=None,
            queries_by_kind={},
            linf=0.0,
            l2=0.0,
            final_top1=None,
            final_topk=[],
            stop_reason="fake",
            steps=0,
            wall_time_s=0.0,
            worker="test",
            adv_png=b"",
            trace=[{"step": 99, "queries": 1}],
        )
        assert db.record(fake) is False
        again = db.cases()[0]
        assert again["success"] == case["success"]
        assert again["queries"] == case["queries"]
        assert 99 not in [s["step"] for s in db.steps(case["id"])]


def test_workers_give_the_same_results(serial_db: Path, tmp_path: Path) -> None:
    cfg = write_grid(tmp_path)
    db = tmp_path / "w.sqlite"
    assert main(["bench", str(cfg), "--db", str(db), "--workers", "2", "-q"]) == 0
    assert results(db) == results(serial_db)
    with BenchDB.open(db, create=False, read_only=True) as d:
        pids = {int(c["worker"].rsplit(":", 1)[1]) for c in d.cases()}
    # Cases ran in worker processes (how many of the two got work depends on scheduling).
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2


def test_a_batched_grid_point_gives_what_single_runs_give(
    serial_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bbattack.bench import runner

    cfg = write_grid(tmp_path)
    with runner.prepare(cfg, tmp_path / "plan.sqlite") as d:
        tasks = runner._tasks(d, d.pending())
    sizes = sorted((t.case.attack, len(t.cases)) for t in tasks)
    # QL: one batch per ε (4 images x 2 seeds); PI starts from its own start image: alone.
    assert sizes == [("pi", 1)] * 16 + [("ql", 8)] * 2
    monkeypatch.setattr(runner, "BATCH", 1)
    db = tmp_path / "single.sqlite"
    assert main(["bench", str(cfg), "--db", str(db), "-q"]) == 0
    assert results(db) == results(serial_db)


def test_ray_local_gives_the_same_results(serial_db: Path, tmp_path: Path) -> None:
    cfg = write_grid(tmp_path)
    db = tmp_path / "ray.sqlite"
    assert main(["bench", str(cfg), "--db", str(db), "--ray", "--workers", "2", "-q"]) == 0
    assert results(db) == results(serial_db)


def _done(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(db)
    try:
        return int(con.execute("SELECT COUNT(*) FROM cases WHERE status = 'done'").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def test_resume_after_sigkill(serial_db: Path, tmp_path: Path) -> None:
    cfg = write_grid(tmp_path, factory="slow_tiny_net")
    db = tmp_path / "k.sqlite"
    cmd = [sys.executable, "-m", "bbattack", "bench", str(cfg), "--db", str(db), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _done(db) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _done(db)
    assert 3 <= killed_at < N_CASES, "the kill should land mid-grid"
    with BenchDB.open(db, create=False, read_only=True) as d:
        first = {c["id"]: (c["finished_at"], c["queries"]) for c in d.cases()}
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming: {killed_at}/{N_CASES}" in rerun.stderr
    with BenchDB.open(db, create=False, read_only=True) as d:
        assert d.counts()[:2] == (N_CASES, N_CASES)
        after = {c["id"]: (c["finished_at"], c["queries"]) for c in d.cases()}
        steps = d.conn.execute("SELECT COUNT(*), COUNT(DISTINCT case_id || '/' || step) FROM steps")
        n_steps, n_distinct = steps.fetchone()
    assert n_steps == n_distinct  # no case ran twice into the steps table
    assert all(after[k] == v for k, v in first.items())  # finished results untouched
    # The slow model computes the same function: the resumed grid equals an unbroken run.
    assert results(db) == results(serial_db)


PHOTO = 'images = {photos = ["coffee"]}\n'
QL = '[[attacks]]\nname = "ql"\nbudget = [10]\n'


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (PHOTO + '[[attacks]]\nname = "nes"\nbudget = [10]', "attacks[0].name"),
        (PHOTO + QL + "eps = [2.0]", "attacks[0].eps"),
        (PHOTO + '[[attacks]]\nname = "ql"', "attacks[0].budget"),
        ('images = {paths = ["missing.png"]}\n' + QL, "images.paths[0]"),
        ('images = {photos = ["nope"]}\n' + QL, "images.photos"),
        (PHOTO + QL + "params = {max_lr = -1}", "attacks[0].params.max_lr"),
        (PHOTO + QL + "params = {bogus = 1}", "attacks[0].params.bogus"),
        (PHOTO + QL + 'threat = ["pi"]', "attacks[0].threat"),
        (PHOTO + "attacks = []", "attacks"),
        (PHOTO + 'model = {name = "resnet"}\n' + QL, "model"),
        (PHOTO + "colour = 1\n" + QL, "colour"),
        ("images = [", "not valid TOML"),
    ],
)
def test_bad_config_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, field: str
) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    db = tmp_path / "r.sqlite"
    assert main(["bench", str(cfg), "--db", str(db), "-q"]) == 2
    err = capsys.readouterr().err
    assert field in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == [cfg]  # no database, no temporary file


def test_another_grid_in_the_same_db_is_refused(
    serial_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = results(serial_db)
    cfg = write_grid(tmp_path, text=GRID.replace("seeds = [0, 1]", "seeds = [0, 1, 2]"))
    assert main(["bench", str(cfg), "--db", str(serial_db), "-q"]) == 2
    assert "holds another grid" in capsys.readouterr().err
    assert results(serial_db) == before


def test_missing_config_and_bad_workers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(tmp_path / "none.toml"), "--db", str(tmp_path / "r.sqlite")]) == 2
    cfg = write_grid(tmp_path)
    assert main(["bench", str(cfg), "--db", str(tmp_path / "r.sqlite"), "--workers", "0"]) == 2
    assert not (tmp_path / "r.sqlite").exists()
    err = capsys.readouterr().err
    assert "no such config file" in err
    assert "--workers" in err


def test_not_a_database(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_text("hello")
    with pytest.raises(UserInputError, match="not a"):
        BenchDB.open(junk, create=False)


def test_a_damaged_database_is_refused_before_a_case_runs(serial_db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "damaged.sqlite"
    data = bytearray(serial_db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    n_pages = len(data) // page
    assert n_pages > 4
    # Zero two b-tree pages in the middle (a zeroed overflow page, in a blob, is not seen by
    # SQLite's checks): the header and the schema page stay readable.
    with sqlite3.connect(serial_db) as con:
        leaves = [
            int(p)
            for (p,) in con.execute("SELECT pageno FROM dbstat WHERE pagetype = 'leaf' ORDER BY 1")
        ]
    middle = leaves[len(leaves) // 2] - 1  # dbstat counts pages from 1
    assert middle > 1
    lo, hi = page * middle, page * (middle + 2)
    data[lo:hi] = bytes(hi - lo)
    copy.write_bytes(bytes(data))
    with pytest.raises(UserInputError, match="damaged") as e:
        BenchDB.open(copy, create=False)
    assert "\n" not in str(e.value)


def test_ray_flag_takes_an_optional_address() -> None:
    assert _ray_argv(["bench", "c.toml", "--ray"]) == ["bench", "c.toml", "--ray=local"]
    assert _ray_argv(["bench", "--ray", "c.toml"]) == ["bench", "--ray=local", "c.toml"]
    assert _ray_argv(["bench", "--ray", "10.0.0.1:6379", "c.toml"]) == [
        "bench",
        "--ray=10.0.0.1:6379",
        "c.toml",
    ]
    assert _ray_argv(["--ray", "auto"]) == ["--ray=auto"]
    assert _ray_argv(["--ray", "ray://head:10001"]) == ["--ray=ray://head:10001"]


def test_committed_table1_config_is_valid() -> None:
    cfg, _ = load_config(TESTS.parent / "benchmarks" / "table1.toml")
    assert {a.name for a in cfg.attacks} >= {"ql", "pi"}
    assert all(e == 0.05 for a in cfg.attacks for e in a.eps)


def test_report_of_a_bench_database(serial_db: Path, tmp_path: Path) -> None:
    html_out, md_out = tmp_path / "r.html", tmp_path / "r.md"
    assert main(["report", str(serial_db), "-o", str(html_out)]) == 0
    assert main(["report", str(serial_db), "-o", str(md_out), "--format", "md"]) == 0
    page = html_out.read_text()
    assert page.count("data:image/png;base64,") >= 2 + 3 * 8
    # The perturbation note holds for any norm and ε (it used to claim ε = 0.05).
    assert "&plusmn;0.05 in a pixel" in page
    md = md_out.read_text()
    assert md.count("\n| ") >= N_CASES  # one row per case, plus the tables' headers
    assert "| ql |" in md
    assert "| pi |" in md


def test_report_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "none.sqlite"), "-o", str(tmp_path / "r.html")]) == 2
    assert not (tmp_path / "r.html").exists()
    assert "no such" in capsys.readouterr().err


def test_a_finished_grid_is_one_plain_file(serial_db: Path) -> None:
    con = sqlite3.connect(serial_db)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        con.close()
    assert not Path(f"{serial_db}-wal").exists()


def test_a_second_run_on_a_busy_database_is_refused(
    serial_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bbattack.bench.runner import _locked

    cfg = write_grid(tmp_path)
    holder = _locked(BenchDB.open(serial_db, create=False))
    try:
        assert main(["bench", str(cfg), "--db", str(serial_db), "-q"]) == 2
        assert "another `bbattack bench` is running" in capsys.readouterr().err
    finally:
        holder.close()
    assert main(["bench", str(cfg), "--db", str(serial_db), "-q"]) == 0


def test_a_foreign_sqlite_file_is_left_untouched(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    before = other.read_bytes()
    assert main(["report", str(other), "-o", str(tmp_path / "r.html")]) == 2
    assert main(["bench", str(write_grid(tmp_path)), "--db", str(other), "-q"]) == 2
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.toml", "other.sqlite"]


def test_a_failing_model_factory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_grid(tmp_path, factory="no_such_function")
    assert main(["bench", str(cfg), "--db", str(tmp_path / "r.sqlite"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "model.factory" in err
    assert "Traceback" not in err
    assert not (tmp_path / "r.sqlite").exists()


def test_targets_per_image_are_distinct_and_bounded(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "images": {"photos": ["coffee"]},
            "targets": {"pool": "classes", "per_image": 9},
            "attacks": [{"name": "ql", "budget": [100]}],
        }
    )
    images = collect_images(cfg, tmp_path, (8, 8))
    pairs = draw_targets(cfg, images, {"coffee": 4}, 10)["coffee"]
    assert sorted(t for t, _ in pairs) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    too_many = cfg.model_copy(update={"targets": cfg.targets.model_copy(update={"per_image": 10})})
    with pytest.raises(UserInputError, match=r"targets.per_image"):
        draw_targets(too_many, images, {"coffee": 4}, 10)


@pytest.mark.parametrize(
    ("extra", "field"),
    [("threat = []", "attacks[0].threat"), ("params = {eps = 0.1}", "attacks[0].params")],
)
def test_more_bad_attack_fields(extra: str, field: str) -> None:
    import tomllib

    with pytest.raises(UserInputError, match=re.escape(field)):
        parse_config(tomllib.loads(PHOTO + QL + extra))


def test_db_that_is_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_grid(tmp_path)
    assert main(["bench", str(cfg), "--db", str(tmp_path), "-q"]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_a_grid_mixes_norms_and_attacks(tmp_path: Path) -> None:
    from bbattack.bench.grid import build_cases

    def grid(linf: dict[str, Any]) -> Any:
        return parse_config(
            {
                "images": {"photos": ["coffee"]},
                "attacks": [
                    {"name": "ta-square", "eps": [0.05], "budget": [50], **linf},
                    {"name": "ta-square", "norm": ["l2"], "eps": [3.0], "budget": [50]},
                    {"name": "art-hsj", "norm": ["linf", "l2"], "eps": [0.5], "budget": [50]},
                ],
            }
        )

    cfg = grid({})
    images = collect_images(cfg, tmp_path, (8, 8))
    rows = build_cases(cfg, images, {"coffee": 4}, 10, str)
    assert [(r.attack, r.threat, r.norm, r.eps) for r in rows] == [
        ("ta-square", "ql", "linf", 0.05),
        ("ta-square", "ql", "l2", 3.0),
        ("art-hsj", "lo", "linf", 0.5),
        ("art-hsj", "lo", "l2", 0.5),
    ]
    # Naming the default norm changes no case id: L∞ grids resume across the upgrade.
    same = build_cases(grid({"norm": ["linf"]}), images, {"coffee": 4}, 10, str)
    assert [r.id for r in same] == [r.id for r in rows]


@pytest.mark.parametrize(
    ("attack", "field", "message"),
    [
        ({"name": "ql", "norm": ["l2"], "eps": [2.0]}, "attacks[0].norm", "ql supports linf"),
        ({"name": "ta-square", "eps": [3.0]}, "attacks[0].eps", "L∞ eps"),
        ({"name": "ql", "norm": ["linf", "linf"]}, "attacks[0].norm", "listed twice"),
    ],
)
def test_a_bad_norm_or_radius_is_refused_naming_the_field(
    attack: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(UserInputError, match=re.escape(field) + ".*" + re.escape(message)):
        parse_config({"images": {"photos": ["coffee"]}, "attacks": [{**attack, "budget": [50]}]})


def test_a_grid_has_untargeted_cases_and_per_attack_seeds(tmp_path: Path) -> None:
    from bbattack.bench.grid import build_cases

    def grid(attack: dict[str, Any]) -> Any:
        return parse_config(
            {
                "images": {"photos": ["coffee", "camera"]},
                "targets": {"per_image": 2},
                "attacks": [{"name": "square", "eps": [0.05], "budget": [50], **attack}],
            }
        )

    cfg = grid({"goal": ["targeted", "untargeted"], "seeds": [3, 4]})
    images = collect_images(cfg, tmp_path, (8, 8))
    rows = build_cases(cfg, images, {"coffee": 4, "camera": 5}, 10, str)
    targeted = [r for r in rows if r.target_id >= 0]
    untargeted = [r for r in rows if r.target_id < 0]
    assert len(targeted) == 2 * 2 * 2  # images x targets x seeds
    assert len(untargeted) == 2 * 2  # images x seeds: one untargeted case per image and seed
    assert all(r.target_name is None and r.start_image is None for r in untargeted)
    assert {r.seed for r in rows} == {3, 4}
    # Targeted cases keep the ids they had before the goal axis existed.
    plain = build_cases(grid({"seeds": [3, 4]}), images, {"coffee": 4, "camera": 5}, 10, str)
    assert [r.id for r in plain] == [r.id for r in targeted]


@pytest.mark.parametrize(
    ("attack", "field", "message"),
    [
        ({"name": "ta-square", "budget": [10**20]}, "attacks[0].budget", "budget must be <="),
        ({"name": "ql", "budget": [50], "goal": ["untargeted"] * 2}, "attacks[0].goal", "twice"),
        ({"name": "pi", "budget": [50], "goal": ["untargeted"]}, "attacks[0].goal", "no untarg"),
        ({"name": "ql", "budget": [50], "seeds": [-1]}, "attacks[0].seeds", ">= 0"),
    ],
)
def test_bad_goal_seeds_and_huge_budgets_are_refused(
    attack: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(UserInputError, match=re.escape(field) + ".*" + re.escape(message)):
        parse_config({"images": {"photos": ["coffee"]}, "attacks": [attack]})


def test_a_huge_budget_leaves_nothing_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "huge.toml"
    cfg.write_text(PHOTO + '[[attacks]]\nname = "ql"\nbudget = [1e20, 100000000000000000000]\n')
    assert main(["bench", str(cfg), "--db", str(tmp_path / "r.sqlite"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "budget" in err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == [cfg]


def test_only_runs_one_attacks_cases_and_the_rest_resume_later(
    serial_db: Path, tmp_path: Path
) -> None:
    os.environ["PYTHONPATH"] = str(TESTS)
    cfg = write_grid(tmp_path)
    db_path = tmp_path / "r.sqlite"
    assert main(["bench", str(cfg), "--db", str(db_path), "-q", "--only", "pi"]) == 0
    with BenchDB.open(db_path, create=False, read_only=True) as db:
        done = {c["attack"] for c in db.cases()}
        pending = {c["attack"] for c in db.cases(status="pending")}
        assert done == {"pi"}
        assert pending == {"ql"}
        assert db.counts()[0] == 4 * 2 * 2
    # The rest of the grid, as if run in one go: same results as the unbroken serial run.
    assert main(["bench", str(cfg), "--db", str(db_path), "-q"]) == 0
    assert results(db_path) == results(serial_db)


def test_only_an_attack_outside_the_grid_is_a_user_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.environ["PYTHONPATH"] = str(TESTS)
    cfg = write_grid(tmp_path)
    db_path = tmp_path / "r.sqlite"
    assert main(["bench", str(cfg), "--db", str(db_path), "-q", "--only", "square"]) == 2
    err = capsys.readouterr().err
    assert "--only: square not in this grid; it has pi, ql" in err
    assert len(err.strip().splitlines()) == 1
    assert not db_path.exists()  # refused before anything was written
