"""What a SIGKILLed ``bbattack attack`` leaves in its folder, and the next command on that
folder tidying it (cli/_leftovers.py): a run killed before run.json leaves a folder that the
same command (or the one ``--resume`` prints) runs in again; one killed once its result.json is
written leaves no checkpoints and no ``.staging-*`` folder behind; a journal that holds a query
is never removed, nor the checkpoints of a run its target stopped.

The kills are real (crash_driver.start: a forked process that SIGKILLs itself at the named
moment); the commands after them run in this process, on the colour model."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bbattack.cli._leftovers import prune_killed, tidy
from bbattack.oracle._journal_db import SCHEMA
from crash_driver import start
from kill_support import Here, command_in, make_here, names, outcome, paid, ql_args


@pytest.fixture
def here(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Here:
    return make_here(monkeypatch, capsys)


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The grey image, and the folder of its unbroken run."""
    root = tmp_path_factory.mktemp("unbroken")
    grey = root / "grey.png"
    Image.new("RGB", (32, 32), (130, 128, 128)).save(grey)
    killed(ql_args(str(grey)), root / "whole", {}, code=0)
    return str(grey), root / "whole"


def killed(args: list[str], out: Path | None, env: dict[str, str], code: int = -9) -> str:
    """Run ``args`` (with ``--out out``) in a forked process, killed where ``env`` says (and
    ended with ``code``); its output, which shows no traceback."""
    log = Path.cwd() / "run.log" if out is None else out.with_name(f"{out.name}.log")
    where = [] if out is None else ["--out", str(out)]
    proc = start([*args, *where], str(log), cwd=os.getcwd(), **env)
    proc.join(120)
    text = log.read_text()
    assert proc.exitcode == code, text
    assert "Traceback" not in text, text
    return text


BEFORE_RUN_JSON = {
    "empty": {"CRASH_KILL_IN": "bbattack.cli.attack:load_model"},
    "journal": {"CRASH_KILL_IN": "bbattack.cli._rundir:RunRecord.write"},
    "inputs": {"CRASH_KILL_AFTER": "inputs.npz"},
}


@pytest.mark.parametrize(
    ("left", "then"),
    [("empty", "resume"), ("journal", "same"), ("journal", "resume"), ("inputs", "same")],
)
def test_a_run_killed_before_run_json_runs_again_in_its_folder(
    left: str, then: str, here: Here, unbroken: tuple[str, Path], tmp_path: Path
) -> None:
    grey, whole = unbroken
    run = tmp_path / "run"
    killed(ql_args(grey), run, BEFORE_RUN_JSON[left])
    assert run.is_dir()
    assert not (run / "run.json").exists()
    if then == "same":
        again = here([*ql_args(grey), "--out", str(run)]).no_traceback()
    else:  # --resume: nothing to resume; one line with the command that starts the run there
        refused = here([*ql_args(grey), "--resume", str(run)])
        assert refused.returncode == 2
        line = refused.one_error_line()
        assert "killed before its first query" in line
        again = here(command_in(line, "start it with: ")).no_traceback()
    assert again.returncode == 0, again.stderr
    assert outcome(run) == outcome(whole)
    assert names(run) == names(whole)  # nothing of the killed run is left
    assert paid(run / "journal.sqlite") == paid(whole / "journal.sqlite")


@pytest.mark.parametrize(
    ("kill", "then"),
    [
        ("after result.json", "same"),
        ("after result.json", "resume"),
        ("after result.json", "force"),
        ("while staging", "resume"),
    ],
)
def test_a_run_killed_writing_its_outputs_leaves_nothing_once_its_folder_is_named_again(
    kill: str, then: str, here: Here, unbroken: tuple[str, Path], tmp_path: Path
) -> None:
    grey, whole = unbroken
    run = tmp_path / "run"
    if kill == "after result.json":
        killed(ql_args(grey), run, {"CRASH_KILL_AFTER": "result.json"})
        assert (run / "result.json").is_file()
    else:
        killed(ql_args(grey), run, {"CRASH_KILL_IN": "bbattack.report:save_trace_plot"})
        assert not (run / "result.json").exists()
    assert list(run.glob(".staging-*"))
    assert list((run / "checkpoints").glob("ckpt-*.npz"))
    before = paid(run / "journal.sqlite")
    flags = {"same": ["--out"], "resume": ["--resume"], "force": ["--out", "--force"]}[then]
    again = here([*ql_args(grey), *flags[:1], str(run), *flags[1:]])
    if then == "same":  # a finished result in --out: refused, as before the kill
        assert again.returncode == 2
        assert "already holds a result" in again.one_error_line()
    else:
        assert again.returncode == 0, again.stderr
    assert names(run) == names(whole)  # no .staging-*, no checkpoints
    assert "note: removed what a killed run left" in again.no_traceback().stderr
    assert outcome(run) == outcome(whole)
    assert paid(run / "journal.sqlite") == before == paid(whole / "journal.sqlite")


def test_without_out_a_folder_a_kill_left_empty_is_removed_by_the_next_run(
    here: Here, unbroken: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grey, whole = unbroken
    monkeypatch.chdir(tmp_path)
    killed(ql_args(grey), None, {"CRASH_KILL_IN": "bbattack.cli.attack:load_model"})
    (left,) = (tmp_path / "bbattack-out").iterdir()
    assert not list(left.iterdir())
    old = time.time() - 120
    os.utime(left, (old, old))
    again = here(ql_args(grey))
    assert again.returncode == 0, again.stderr
    (run,) = (tmp_path / "bbattack-out").iterdir()  # the empty one is gone (its name is free)
    assert outcome(run) == outcome(whole)


# -- what is never removed


def journal_with(path: Path, queries: int) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA)
        db.execute("INSERT INTO runs (run, created) VALUES (1, 0)")
        for seq in range(1, queries + 1):
            db.execute(
                "INSERT INTO queries (run, seq, example, kind, digest, time, status, chain) "
                "VALUES (1, ?, 0, 'scores', 'd', 0, 'sent', 'c')",
                (seq,),
            )
    db.close()


def run_folder(out: Path, stop: str) -> None:
    out.mkdir()
    (out / "run.json").write_text("{}")
    (out / "result.json").write_text(json.dumps({"stop_reason": stop}))
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "ckpt-00000002.npz").write_bytes(b"x")
    (out / "checkpoints" / ".ckpt-00000004.npz.123.tmp").write_bytes(b"x")
    (out / ".staging-abc").mkdir()


@pytest.mark.parametrize(("stop", "kept"), [("budget", False), ("success", False), ("quota", True)])
def test_checkpoints_go_with_a_final_result_and_stay_with_a_resumable_stop(
    tmp_path: Path, stop: str, kept: bool
) -> None:
    out = tmp_path / "run"
    run_folder(out, stop)
    removed = tidy(out)
    assert not (out / ".staging-abc").exists()
    assert not (out / "checkpoints" / ".ckpt-00000004.npz.123.tmp").exists()
    assert (out / "checkpoints" / "ckpt-00000002.npz").exists() == kept
    assert ("checkpoints/ (its result.json is final)" in removed) != kept


def test_tidying_is_best_effort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder where nothing can be removed (read-only): tidy leaves it, raising nothing (the
    write probe after it says, in one line, that the folder cannot be written)."""
    out = tmp_path / "run"
    run_folder(out, "budget")

    def read_only(path: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(shutil, "rmtree", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    assert tidy(out) == []
    assert (out / "checkpoints" / "ckpt-00000002.npz").exists()
    assert (out / ".staging-abc").exists()


@pytest.mark.parametrize(
    ("journal", "others", "left"),
    [
        (0, [], set()),  # a run killed before its first query: the folder is empty again
        (None, [], set()),  # killed before even the journal
        (1, [], {"journal.sqlite"}),  # a query on record (here 'sent': billed): kept
        ("garbage", [], {"journal.sqlite"}),  # unreadable: kept
        (0, ["notes.txt"], {"journal.sqlite", "inputs.npz", "notes.txt"}),  # not only ours
    ],
)
def test_a_journal_that_holds_a_query_is_never_removed(
    tmp_path: Path, journal: Any, others: list[str], left: set[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "inputs.npz").write_bytes(b"npz")
    if journal == "garbage":
        (out / "journal.sqlite").write_bytes(b"not a database, not empty" * 100)
    elif journal is not None:
        journal_with(out / "journal.sqlite", journal)
    for name in others:
        (out / name).write_text("mine")
    tidy(out)
    assert {p.name for p in out.iterdir()} == left


def test_prune_removes_only_old_unlocked_folders_that_hold_no_run(tmp_path: Path) -> None:
    root = tmp_path / "bbattack-out"
    for name in ("empty", "young", "locked", "zero-journal", "paid-journal", "a-run", "mine"):
        (root / name).mkdir(parents=True)
    journal_with(root / "zero-journal" / "journal.sqlite", 0)
    journal_with(root / "paid-journal" / "journal.sqlite", 3)
    (root / "a-run" / "run.json").write_text("{}")
    (root / "mine" / "notes.txt").write_text("mine")
    now = time.time()
    for d in root.iterdir():
        if d.name != "young":
            os.utime(d, (now - 120, now - 120))
    fd = os.open(root / "locked", os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        prune_killed(root, now=now)
    finally:
        os.close(fd)
    assert {d.name for d in root.iterdir()} == {"young", "locked", "paid-journal", "a-run", "mine"}
    assert {p.name for p in (root / "paid-journal").iterdir()} == {"journal.sqlite"}
