"""Issue 10 in bench grids: a case killed mid-run resumes from its last checkpoint (not from
its start), pays no query twice, and ends as an unbroken run; every case records provenance."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bbattack.attacks import checkpoint
from bbattack.bench import BenchDB
from bbattack.cli import main

TESTS = Path(__file__).resolve().parents[1]

ONE_CASE = """
name = "one"
seed = 0
seeds = [0]
[model]
factory = "bench_models:{factory}"
backend = "torch"
[images]
photos = ["coffee"]
[targets]
pool = "classes"
[[attacks]]
name = "ql"
budget = [6000]
eps = [0.02]
params = {{ samples = 20 }}
"""


def grid(tmp_path: Path, factory: str) -> Path:
    p = tmp_path / f"{factory}.toml"
    p.write_text(ONE_CASE.format(factory=factory))
    return p


def case(db: Path) -> dict[str, object]:
    with BenchDB.open(db, create=False, read_only=True) as d:
        (c,) = d.cases()
        c["steps_rows"] = [s["queries"] for s in d.steps(str(c["id"]))]
        c["png"] = d.adv_png(str(c["id"]))
        return c


def _killed_run(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A reference run of the one-case grid, and the same case killed after its second
    checkpoint; returns the two databases and the killed command's bench arguments."""
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    os.environ["PYTHONPATH"] = str(TESTS)  # the in-process reference imports the factory too
    ref = tmp_path / "ref.sqlite"
    assert main(["bench", str(grid(tmp_path, "tiny_net")), "--db", str(ref), "-q"]) == 0
    db = tmp_path / "k.sqlite"
    cmd = [sys.executable, "-m", "bbattack", "bench", str(grid(tmp_path, "slow_tiny_net"))]
    cmd += ["--db", str(db), "-q", "--checkpoint-every", "5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    work = tmp_path / "k.sqlite.work"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if len(list(work.glob("*/checkpoints/ckpt-*.npz"))) == 2:  # two: past the first one
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the case ended before the kill"
    return ref, db, cmd[3:]


def test_a_killed_case_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    ref, db, again = _killed_run(tmp_path)
    work = tmp_path / "k.sqlite.work"
    assert main(again) == 0  # the same command, in this process
    assert not work.exists()  # removed once the case is in the database
    got, want = case(db), case(ref)
    for key in ("success", "queries", "queries_at_success", "linf", "steps", "png", "steps_rows"):
        assert got[key] == want[key], key
    pg, pw = got["provenance"], want["provenance"]
    assert isinstance(pg, dict)
    assert isinstance(pw, dict)
    assert pg["journal"]["resumed_from_step"] >= 10  # the newer of the two checkpoints
    assert pw["journal"]["resumed_from_step"] is None
    for key in ("paid", "journal", "last_seq", "chain"):  # every query paid once
        assert pg["journal"][key] == pw["journal"][key], key
    assert pg["seed"] == 0
    assert pg["target"]["weights"] == pw["target"]["weights"]
    assert pg["target"]["backend"] == "torch"
    assert pg["config_hash"] == pw["config_hash"]
    assert {"packages", "machine", "attack_version"} <= set(pg)


def test_a_checkpoint_of_other_attack_code_starts_the_task_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bbattack upgraded between the kill and the rerun: the task's checkpoint cannot be
    used, so the task starts over (no error) and ends as an unbroken run would."""
    ref, db, again = _killed_run(tmp_path)
    monkeypatch.setattr(checkpoint, "attack_version", lambda *_: "0.0.0+other")
    assert main(again) == 0
    assert not (tmp_path / "k.sqlite.work").exists()
    got, want = case(db), case(ref)
    for key in ("success", "queries", "queries_at_success", "linf", "steps", "png"):
        assert got[key] == want[key], key
    journal = got["provenance"]["journal"]  # type: ignore[index]
    assert journal["resumed_from_step"] is None
    assert "another attack version" in journal["restarted"]
    assert journal["journal"] > 0  # the old run's answers served the repeated queries


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's parent-death signal")
def test_a_killed_bench_takes_its_workers_with_it(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    cmd = [sys.executable, "-m", "bbattack", "bench", str(grid(tmp_path, "slow_tiny_net"))]
    cmd += ["--db", str(tmp_path / "w.sqlite"), "-q", "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while not workers and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        # The pool's resource tracker is a child too; workers import bbattack's runner.
        workers = [
            c
            for c in _children(proc.pid)
            if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()
        ]
    assert workers, "no worker started"
    time.sleep(2.0)  # past the worker's start-up, into its task
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers)
