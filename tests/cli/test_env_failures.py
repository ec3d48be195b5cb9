"""Every environment failure of ``bbattack attack`` is one line and leaves a resumable run: a
full disk at a checkpoint or at a journal commit, a read-only folder, a damaged inputs.npz or
run.json. Each prints one ``error:`` line (what happened, that the run is intact or what was
lost, the command to continue), exits 2, never shows a traceback, and the command it prints
then finishes the run with the result of an unbroken one.

Disk-full and read-only are simulated by monkeypatching the writes (the tests run as root,
which chmod does not stop); damage is a truncation. All on the fake ImageNet-shaped colour
model of crash_driver, in this process, except the run killed for the fuzz test's base."""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image

import bbattack.attacks.checkpoint as checkpoint
import bbattack.cli.attack as cli_attack
from bbattack.oracle._journal_db import Transaction
from bbattack.remote import HttpLabelTarget
from bbattack.report import write_outputs
from bbattack.service import create_app
from bbattack.service.runner import serve_in_thread
from crash_driver import colour_model
from kill_support import Here, Ran, make_here

DRIVER = str(Path(__file__).resolve().parents[1] / "crash_driver.py")
KEY = "env-failures-key-0001"
QL = ["--untargeted", "--attack", "ql", "--param", "samples=10", "--max-queries", "400"]


@pytest.fixture
def here(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Here:
    """``bbattack`` in this process, on the colour model (label API clients retry fast)."""
    return make_here(monkeypatch, capsys)


@pytest.fixture
def grey(tmp_path: Path) -> str:
    path = tmp_path / "grey.png"
    Image.new("RGB", (32, 32), (130, 128, 128)).save(path)
    return str(path)


def ql_args(grey: str) -> list[str]:
    return ["attack", grey, *QL, "--seed", "0", "--checkpoint-every", "3"]


def result(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "result.json").read_text())
    doc.pop("wall_time_s")
    for key in ("http_calls", "retries"):
        doc.get("remote", {}).pop(key, None)
    return doc


def paid_rows(journal: Path) -> int:
    with sqlite3.connect(journal) as db:
        return int(db.execute("SELECT COUNT(*) FROM queries WHERE status = 'paid'").fetchone()[0])


def command_in(line: str, marker: str = "resume with: ") -> list[str]:
    """The command a message tells the user to run, as argv for main()."""
    words = shlex.split(line.split(marker, 1)[1])
    assert words[:2] == ["bbattack", "attack"], line
    return words[1:]


def fail_on_call(n: int, error: BaseException) -> Callable[[Callable[..., Any]], Any]:
    """A wrapper that lets calls through, then raises ``error`` from call ``n`` on."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        count = [0]

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            count[0] += 1
            if count[0] >= n:
                raise error
            return fn(*args, **kwargs)

        return wrapped

    return wrap


@pytest.fixture
def unbroken(here: Here, grey: str, tmp_path: Path) -> dict[str, Any]:
    whole = tmp_path / "whole"
    done = here([*ql_args(grey), "--out", str(whole)])
    assert done.returncode == 0, done.stderr
    return result(whole)


def test_a_full_disk_at_a_checkpoint_is_one_line_and_the_run_resumes(
    here: Here, grey: str, tmp_path: Path, unbroken: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write() raises it: no file
    with monkeypatch.context() as m:
        m.setattr(checkpoint, "_write", fail_on_call(3, full)(checkpoint._write))
        broken = here([*ql_args(grey), "--out", str(run)])
    assert broken.returncode == 2
    line = broken.one_error_line()
    assert "disk is full" in line
    assert "ckpt-" in line  # which file could not be written
    assert f"the run in {run} is intact" in line
    assert len(list((run / "checkpoints").glob("ckpt-*.npz"))) == 2
    assert not list((run / "checkpoints").glob(".*tmp"))
    again = here(command_in(line))
    assert again.returncode == 0, again.stderr
    assert result(run) == unbroken


def test_a_full_disk_at_a_journal_commit_is_one_line_and_the_run_resumes(
    here: Here, grey: str, tmp_path: Path, unbroken: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    full = sqlite3.OperationalError("database or disk is full")
    with monkeypatch.context() as m:
        m.setattr(Transaction, "_commit", fail_on_call(25, full)(Transaction._commit))
        broken = here([*ql_args(grey), "--out", str(run)])
    assert broken.returncode == 2
    line = broken.one_error_line()
    assert "disk is full" in line
    assert "journal.sqlite" in line
    assert f"the run in {run} is intact" in line
    again = here(command_in(line))
    assert again.returncode == 0, again.stderr
    assert result(run) == unbroken


def test_a_full_disk_before_the_first_query_leaves_nothing_behind(
    here: Here, grey: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    full = sqlite3.OperationalError("database or disk is full")
    with monkeypatch.context() as m:
        m.setattr(Transaction, "_commit", fail_on_call(1, full)(Transaction._commit))
        broken = here([*ql_args(grey), "--out", str(run)])
    assert broken.returncode == 2
    line = broken.one_error_line()
    assert "disk is full" in line
    assert "nothing was sent" in line
    assert not run.exists() or not list(run.iterdir())
    assert here([*ql_args(grey), "--out", str(run)]).returncode == 0


def test_a_read_only_folder_is_one_line_and_the_run_resumes(
    here: Here, grey: str, tmp_path: Path, unbroken: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read-only when the result is written (after the last query), then still read-only when
    resumed (refused before anything), then writable again."""
    run = tmp_path / "run"
    ro = OSError(errno.EROFS, os.strerror(errno.EROFS), str(run / "result.json"))
    with monkeypatch.context() as m:
        m.setattr(cli_attack, "write_outputs", fail_on_call(1, ro)(write_outputs))
        broken = here([*ql_args(grey), "--out", str(run)])
    assert broken.returncode == 2
    line = broken.one_error_line()
    assert "read-only" in line
    assert f"the run in {run} is intact" in line
    resume = command_in(line)
    paid = paid_rows(run / "journal.sqlite")
    with monkeypatch.context() as m:
        ro_sync = OSError(errno.EROFS, os.strerror(errno.EROFS))
        m.setattr(os, "fsync", fail_on_call(1, ro_sync)(os.fsync))
        still = here(resume)
    assert still.returncode == 2
    line = still.one_error_line()
    assert "Read-only file system" in line
    assert "untouched" in line
    again = here(resume)
    assert again.returncode == 0, again.stderr
    assert result(run) == unbroken
    assert paid_rows(run / "journal.sqlite") == paid  # the resume paid nothing again


def killed_run(grey: str, out: Path) -> None:
    """A run SIGKILLed after 150 queries (crash_driver kills itself between two batches)."""
    done = subprocess.run(
        [sys.executable, DRIVER, *ql_args(grey), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CRASH_KILL_AT": "150"},
    )
    assert done.returncode == -signal.SIGKILL, done.stderr


def test_a_damaged_inputs_npz_is_rewritten_from_the_command(
    here: Here, grey: str, tmp_path: Path, unbroken: dict[str, Any]
) -> None:
    run = tmp_path / "run"
    killed_run(grey, run)
    data = (run / "inputs.npz").read_bytes()
    (run / "inputs.npz").write_bytes(data[: len(data) // 2])
    again = here([*ql_args(grey), "--resume", str(run)])
    assert again.returncode == 0, again.stderr
    assert "inputs.npz" in again.stderr
    assert "rewritten" in again.stderr
    assert result(run) == unbroken
    assert (run / "inputs.npz").read_bytes() == data


def test_a_damaged_run_json_is_refused_in_one_line_with_the_command_that_starts_over(
    here: Here, grey: str, tmp_path: Path, unbroken: dict[str, Any]
) -> None:
    run = tmp_path / "run"
    killed_run(grey, run)
    text = (run / "run.json").read_text()
    (run / "run.json").write_text(text[: len(text) // 3])
    paid = paid_rows(run / "journal.sqlite")
    refused = here([*ql_args(grey), "--resume", str(run)])
    assert refused.returncode == 2
    line = refused.one_error_line()
    assert "run.json is damaged" in line
    over = command_in(line, "start over with: ")
    assert over[-1] == "--force"
    again = here(over)
    assert again.returncode == 0, again.stderr
    doc = result(run)
    assert doc.pop("provenance")["journal"]["journal"] >= paid  # answered free, not paid again
    unbroken.pop("provenance")
    assert doc == unbroken
    assert paid_rows(run / "journal.sqlite") == paid_rows(tmp_path / "whole" / "journal.sqlite")


# -- fuzz: which file is damaged, and how much of it is cut


DAMAGED = ["run.json", "inputs.npz", "journal.sqlite", "journal.sqlite-wal", "checkpoint"]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, dict[str, Any]]:
    """A run killed after 150 queries, and the result of the same run unbroken."""
    root = tmp_path_factory.mktemp("base")
    grey = root / "grey.png"
    Image.new("RGB", (32, 32), (130, 128, 128)).save(grey)
    killed_run(str(grey), root / "run")
    whole = subprocess.run(
        [sys.executable, DRIVER, *ql_args(str(grey)), "--out", str(root / "whole")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert whole.returncode == 0, whole.stderr
    return str(grey), root / "run", result(root / "whole")


def follow(here: Here, line: str, run: Path) -> Ran:
    """Do what a refusal says: start over, or remove the checkpoints and resume."""
    if "start over" in line:
        return here(command_in(line, "with: "))
    assert f"remove {run / 'checkpoints'}, then resume with: " in line, line
    shutil.rmtree(run / "checkpoints")
    return here(command_in(line))


@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(which=st.sampled_from(DAMAGED), cut=st.floats(0.0, 1.0), extra=st.integers(1, 64))
@example(which="run.json", cut=0.5, extra=1)
@example(which="inputs.npz", cut=0.9, extra=1)
@example(which="journal.sqlite-wal", cut=0.0, extra=1)
@example(which="journal.sqlite-wal", cut=0.4, extra=1)
@example(which="checkpoint", cut=0.5, extra=1)
def test_fuzz_a_damaged_run_resumes_or_is_refused_in_one_line(
    here: Here,
    base_run: tuple[str, Path, dict[str, Any]],
    which: str,
    cut: float,
    extra: int,
) -> None:
    """Cut ``extra`` bytes or more from one file of a killed run (``cut``: the fraction kept):
    the resume finishes with the unbroken result, or refuses in one line whose command does."""
    grey, base, unbroken = base_run
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(base, run)
        target = run / which
        if which == "checkpoint":
            target = sorted((run / "checkpoints").glob("ckpt-*.npz"))[-1]
        data = target.read_bytes()
        target.write_bytes(data[: max(0, min(len(data) - extra, int(len(data) * cut)))])
        again = here([*ql_args(grey), "--resume", str(run)])
        assert again.returncode in (0, 2), again.stderr
        event(f"{which}: {'resumed' if again.returncode == 0 else 'refused'}")
        if again.returncode == 2:
            line = again.one_error_line()
            assert which.split(".")[0] in line, line
            again = follow(here, line, run)
        assert again.returncode == 0, again.stderr
        doc, whole = result(run), dict(unbroken)
        doc.pop("provenance"), whole.pop("provenance")
        assert doc == whole


# -- over HTTP: a full disk when a paid answer is committed


@pytest.fixture
def service() -> Iterator[tuple[str, Any]]:
    app = create_app(colour_model(), api_keys=[KEY])
    with serve_in_thread(app) as url:
        yield url, app


def test_a_full_disk_after_a_paid_call_counts_it_as_billed(
    here: Here,
    grey: str,
    tmp_path: Path,
    service: tuple[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The call was billed, its answer could not be committed: exit 2, one line; the resume
    asks it again, and result.json reports ``paid + lost_billed`` = what the service billed."""
    url, app = service
    green, run = tmp_path / "green.png", tmp_path / "run"
    Image.new("RGB", (32, 32), (100, 160, 100)).save(green)
    args = [
        *["attack", grey, "--threat", "pi", "--attack", "pi", "--target", "Cat"],
        *["--start-image", str(green), "--success", "topk", "--max-queries", "300"],
        *["--param", "samples=10", "--seed", "0", "--checkpoint-every", "2"],
        *["--endpoint", f"{url}/v1/images:annotate", "--api-key", KEY, "--max-results", "20"],
    ]
    calls, armed = [0], [False]
    run_batch, commit = HttpLabelTarget._run_batch, Transaction._commit

    def answered(self: HttpLabelTarget, batch: Any) -> Any:
        got = run_batch(self, batch)
        calls[0] += 1
        armed[0] = armed[0] or calls[0] == 6
        return got

    def full(self: Transaction) -> None:
        if armed[0]:
            raise sqlite3.OperationalError("database or disk is full")
        commit(self)

    with monkeypatch.context() as m:
        m.setattr(HttpLabelTarget, "_run_batch", answered)
        m.setattr(Transaction, "_commit", full)
        broken = here([*args, "--out", str(run)])
    assert broken.returncode == 2
    line = broken.one_error_line()
    assert "disk is full" in line
    assert "billed" in line
    again = here(command_in(line))
    assert again.returncode == 0, again.stderr
    remote = json.loads((run / "result.json").read_text())["remote"]
    assert remote["lost_billed"] > 0
    assert remote["paid_queries"] + remote["lost_billed"] == int(app.state.usage[KEY])
