"""Issue 10 end to end: ``bbattack attack`` killed with SIGKILL at a random step and resumed
equals an unbroken run, pays no query twice (locally and over HTTP with faults injected),
falls back from a damaged checkpoint, refuses another config, stops cleanly on Ctrl-C; and
``bbattack replay`` reproduces a finished run and catches an edited journal.

Runs that are killed run in subprocesses (tests/crash_driver.py), the others in this process,
all on a fake ImageNet-shaped model whose classes follow the mean colour. A kill is chosen at
random between a quarter and three quarters of the unbroken run's queries; its seed is in every
assertion message."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bbattack.service import create_app
from bbattack.service.faults import FaultInjector
from bbattack.service.runner import serve_in_thread
from crash_driver import colour_model
from kill_support import Here, make_here

DRIVER = str(Path(__file__).resolve().parents[1] / "crash_driver.py")
KEY = "crash-safe-key-0001"
SEED = random.randrange(1 << 30)

ATTACKS = {
    "ql": ["--untargeted", "--attack", "ql", "--param", "samples=10", "--max-queries", "400"],
    "pi": [
        *["--threat", "pi", "--attack", "pi", "--target", "tabby", "--start-image", "{start}"],
        *["--param", "samples=10", "--max-queries", "300"],
    ],
    "lo": [
        *["--threat", "lo", "--attack", "lo", "--target", "tabby", "--start-image", "{start}"],
        *["--param", "samples=4", "--param", "noise_samples=3", "--param", "mu=0.01"],
        *["--param", "starting_delta_eps=0.1", "--max-queries", "600"],
    ],
}


@pytest.fixture
def images(tmp_path: Path) -> tuple[str, str]:
    """Grey (a golden retriever, just) and a green start image (a tabby)."""
    grey, green = tmp_path / "grey.png", tmp_path / "green.png"
    Image.new("RGB", (32, 32), (130, 128, 128)).save(grey)
    Image.new("RGB", (32, 32), (100, 160, 100)).save(green)
    return str(grey), str(green)


def argv(name: str, images: tuple[str, str]) -> list[str]:
    grey, green = images
    args = [a.replace("{start}", green) for a in ATTACKS[name]]
    return ["attack", grey, *args, "--seed", "0", "--checkpoint-every", "3"]


@pytest.fixture
def here(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Here:
    """``bbattack`` in this process, on the colour model (label API clients retry fast)."""
    return make_here(monkeypatch, capsys)


def cli(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, DRIVER, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


def last_seq(journal: Path) -> int:
    if not journal.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM queries").fetchone()[0])
    except sqlite3.OperationalError:  # being created
        return 0


def kill_at(args: list[str], out: Path, at: int, **env: str) -> int:
    """Run, and SIGKILL it from outside once the journal holds ``at`` queries and a checkpoint
    exists; returns how many queries it had answered."""
    proc = subprocess.Popen(
        [sys.executable, DRIVER, *args, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "CRASH_SLOW_S": "0.005", **env},
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        ckpt = out / "checkpoints"
        if last_seq(out / "journal.sqlite") >= at and ckpt.is_dir() and any(ckpt.iterdir()):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill (seed {SEED})"
    return last_seq(out / "journal.sqlite")


def result(out: Path, *drop: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "result.json").read_text())
    doc.pop("wall_time_s")
    for key in drop:
        doc.get("remote", {}).pop(key, None)
    return doc


def paid(journal: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(journal) as db:
        rows = db.execute("SELECT seq, digest FROM queries WHERE status = 'paid' ORDER BY seq")
        return [(int(s), str(d)) for s, d in rows]


@pytest.mark.parametrize("name", list(ATTACKS))
def test_a_sigkilled_attack_resumes_to_the_unbroken_result(
    name: str, images: tuple[str, str], tmp_path: Path, here: Here
) -> None:
    args = argv(name, images)
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    done = here([*args, "--out", str(whole)])
    assert done.returncode == 0, done.stderr
    total = last_seq(whole / "journal.sqlite")
    rng = random.Random(f"{SEED}-{name}")
    at = rng.randint(total // 4, 3 * total // 4)
    killed = kill_at(args, broken, at)
    assert not (broken / "result.json").exists()
    again = here([*args, "--resume", str(broken)])
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr
    why = f"seed {SEED}: killed after {killed} of {total} queries"
    assert result(broken) == result(whole), why
    assert (broken / "trace.jsonl").read_text() == (whole / "trace.jsonl").read_text(), why
    # Every query paid once: the same rows as the unbroken run, none twice.
    assert paid(broken / "journal.sqlite") == paid(whole / "journal.sqlite"), why
    assert not (broken / "checkpoints").exists()  # gone once the result is written
    replay = here(["replay", str(broken)])
    assert replay.returncode == 0, replay.stderr
    assert "reproduced" in replay.stdout


class ProbesPass:
    """ASGI: the command's free pre-flight call (no image: a tiny body) goes straight to the
    service, every call with images through the fault injector."""

    def __init__(self, app: Any, faulty: Any) -> None:
        self.app, self.faulty = app, faulty

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        size = dict(scope.get("headers", [])).get(b"content-length", b"0")
        inner = self.faulty if scope["type"] == "http" and int(size) > 100 else self.app
        await inner(scope, receive, send)


@pytest.fixture
def service() -> Iterator[tuple[str, Any, FaultInjector]]:
    """A label service that fails 20% of its calls with images (a failed call is not billed)."""
    app = create_app(colour_model(), api_keys=[KEY])
    faulty = FaultInjector(app, rate=0.2, seed=1, timeout_s=0.05)
    with serve_in_thread(ProbesPass(app, faulty)) as url:
        yield url, app, faulty


def http_argv(url: str, images: tuple[str, str]) -> list[str]:
    grey, green = images
    return [
        *["attack", grey, "--threat", "pi", "--attack", "pi", "--target", "Cat"],
        *["--start-image", green, "--success", "topk", "--max-queries", "300"],
        *["--param", "samples=10", "--seed", "0", "--checkpoint-every", "2"],
        *["--endpoint", f"{url}/v1/images:annotate", "--api-key", KEY, "--max-results", "20"],
    ]


def billed(app: Any) -> int:
    return int(app.state.usage.get(KEY, 0))


def test_over_http_with_faults_the_service_bills_what_the_journal_paid(
    service: tuple[str, Any, FaultInjector], images: tuple[str, str], tmp_path: Path, here: Here
) -> None:
    url, app, faults = service
    args = http_argv(url, images)
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    done = here([*args, "--out", str(whole)])
    assert done.returncode == 0, done.stderr
    unbroken_bill = billed(app)
    total = last_seq(whole / "journal.sqlite")
    at = random.Random(f"{SEED}-http").randint(total // 4, 3 * total // 4)
    # Killed between two calls (a kill in the middle of a call is billed by the service and
    # never answered: the journal can only note it, see the next test).
    killed = cli([*args, "--out", str(broken)], CRASH_KILL_AT=str(at), CRASH_FAST_RETRIES="1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    again = here([*args, "--resume", str(broken)])
    assert again.returncode == 0, again.stderr
    why = f"seed {SEED}: killed after {at} of {total} queries"
    got = result(broken, "http_calls", "retries")
    assert got == result(whole, "http_calls", "retries"), why
    bill = billed(app) - unbroken_bill
    assert bill == len(paid(broken / "journal.sqlite")) == got["remote"]["paid_queries"], why
    assert bill == unbroken_bill == len(paid(whole / "journal.sqlite")), why
    assert faults.injected.total() > 0


def test_a_kill_in_the_middle_of_a_paid_call_is_on_record(
    service: tuple[str, Any, FaultInjector], images: tuple[str, str], tmp_path: Path, here: Here
) -> None:
    """SIGKILL from outside, at any moment: the service may have billed a call whose answer
    never came back. The journal wrote the call down before sending it ('sent'); the resumed
    run moves such rows to ``lost`` and asks again. Billed = paid + lost in flight, at most."""
    url, app, _ = service
    args = http_argv(url, images)
    broken = tmp_path / "broken"
    before = billed(app)
    kill_at(args, broken, 20, CRASH_FAST_RETRIES="1", CRASH_SLOW_S="0.02")
    again = here([*args, "--resume", str(broken)])
    assert again.returncode == 0, again.stderr
    with sqlite3.connect(broken / "journal.sqlite") as db:
        (in_flight,) = db.execute("SELECT COUNT(*) FROM lost WHERE status = 'sent'").fetchone()
    n_paid = len(paid(broken / "journal.sqlite"))
    assert n_paid <= billed(app) - before <= n_paid + in_flight


def test_a_damaged_checkpoint_falls_back_and_another_config_is_refused(
    images: tuple[str, str], tmp_path: Path, here: Here
) -> None:
    args = argv("ql", images)
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert here([*args, "--out", str(whole)]).returncode == 0
    total = last_seq(whole / "journal.sqlite")
    kill_at([*args[:-1], "2"], broken, total // 2)  # --checkpoint-every 2
    other = here(
        [*[a if a != "samples=10" else "samples=12" for a in args], "--resume", str(broken)]
    )
    assert other.returncode == 2
    # A kill mid-write can leave a temporary file, which the next command removes and notes.
    lines = other.stderr.strip().splitlines()
    assert all(x.startswith("note: removed") for x in lines[:-1]), lines
    line = lines[-1]
    assert line.startswith("error: --resume")
    assert "another config" in line
    assert "attack_config.samples" in line
    ckpts = sorted((broken / "checkpoints").glob("ckpt-*.npz"))
    assert len(ckpts) == 2  # the newest, and the one before it
    ckpts[-1].write_bytes(ckpts[-1].read_bytes()[:-100])  # truncated
    again = here([*args[:-1], "2", "--resume", str(broken)])
    assert again.returncode == 0, again.stderr
    assert f"checkpoint {ckpts[-1]} is damaged" in " ".join(again.stderr.split())
    assert f"after step {int(ckpts[0].stem[5:])}" in again.stderr
    assert result(broken) == result(whole)


def test_ctrl_c_writes_a_checkpoint_and_prints_the_resume_command(
    images: tuple[str, str], tmp_path: Path, here: Here
) -> None:
    args = argv("pi", images)
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    assert here([*args, "--out", str(whole)]).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, DRIVER, *args, "--out", str(stopped)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CRASH_SLOW_S": "0.005"},
    )
    while proc.poll() is None and last_seq(stopped / "journal.sqlite") < 40:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert list((stopped / "checkpoints").glob("ckpt-*.npz"))
    (command,) = [line for line in err.splitlines() if "resume with: " in line]
    resume = command.split("resume with: ", 1)[1].split()
    assert resume[:2] == ["bbattack", "attack"]
    assert resume[-2:] == ["--resume", str(stopped)]
    again = here(resume[1:])
    assert again.returncode == 0, again.stderr
    assert result(stopped) == result(whole)


def test_replay_reproduces_a_run_and_finds_an_edited_journal(
    images: tuple[str, str], tmp_path: Path, here: Here
) -> None:
    run = tmp_path / "run"
    assert here([*argv("lo", images), "--out", str(run)]).returncode == 0
    ok = here(["replay", str(run)])
    assert ok.returncode == 0, ok.stderr
    journal = run / "journal.sqlite"
    with sqlite3.connect(journal) as db:
        (n,) = db.execute("SELECT MAX(seq) FROM queries").fetchone()
        (labels,) = db.execute("SELECT labels FROM queries WHERE seq = ?", (n // 2,)).fetchone()
        edited = np.frombuffer(labels, "<i8").copy()
        edited[0] = (edited[0] + 1) % 1000
        db.execute("UPDATE queries SET labels = ? WHERE seq = ?", (edited.tobytes(), n // 2))
    bad = here(["replay", str(run)])
    assert bad.returncode == 2
    assert (
        bad.stderr.strip()
        == f"error: journal row {n // 2} was altered: its hash chain does not hold"
    )
    with sqlite3.connect(journal) as db:
        db.execute("UPDATE queries SET labels = ? WHERE seq = ?", (labels, n // 2))
        (digest,) = db.execute("SELECT digest FROM queries WHERE seq = ?", (n,)).fetchone()
        db.execute("DELETE FROM queries WHERE seq = ?", (n,))
    short = here(["replay", str(run)])
    assert short.returncode == 2
    assert short.stderr.strip() == (
        f"error: query {n} is not in the journal (asked {digest}, journal: none)"
    )


def test_force_starts_over_and_pays_nothing_the_journal_holds(
    images: tuple[str, str], tmp_path: Path, here: Here
) -> None:
    out = tmp_path / "out"
    args = [*argv("ql", images), "--out", str(out)]
    assert here(args).returncode == 0
    first = json.loads((out / "result.json").read_text())
    refused = here(args)  # a non-empty --out
    assert refused.returncode == 2
    assert "--force" in refused.stderr
    assert here([*args, "--force"]).returncode == 0
    again = json.loads((out / "result.json").read_text())
    with sqlite3.connect(out / "journal.sqlite") as db:
        by_run = dict(
            db.execute("SELECT run, SUM(status = 'paid') FROM queries GROUP BY run").fetchall()
        )
    assert by_run[1] > 0
    assert by_run[2] == 0  # the same queries again: every one answered from the journal
    assert again["provenance"]["journal"]["journal"] == again["queries"]
    for doc in (first, again):
        doc.pop("wall_time_s")
        doc.pop("provenance")
    assert again == first
