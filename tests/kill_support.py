"""Helpers of the tests that kill ``bbattack attack`` and look at what it left (tests/cli/
test_leftovers.py, test_kill_fuzz.py): the command in this process, the commands its error
lines give, the outcome of a run, what its folder holds."""

from __future__ import annotations

import functools
import hashlib
import json
import shlex
import sqlite3
import threading
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

import bbattack.cli._remote as cli_remote
import bbattack.cli.attack as cli_attack
from bbattack.cli import main
from bbattack.remote import HttpLabelTarget
from crash_driver import colour_logits, colour_model

QL = ["--untargeted", "--attack", "ql", "--param", "samples=10", "--max-queries", "200"]


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str

    def no_traceback(self) -> Ran:
        assert "Traceback" not in self.stdout + self.stderr, self.stderr
        return self

    def one_error_line(self) -> str:
        """The stderr of a refusal: its last line, the only ``error:`` one, no traceback."""
        self.no_traceback()
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:")]
        assert len(errors) == 1, self.stderr
        assert lines[-1] == errors[0], self.stderr
        return errors[0]


Here = Callable[[list[str]], Ran]


def make_here(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Here:
    """``bbattack`` in this process, on the colour model (label API clients retry fast)."""
    model = colour_model()
    monkeypatch.setattr(cli_attack, "load_model", lambda name="lite0", backend="auto": model)
    fast = functools.partial(
        HttpLabelTarget, max_retries=30, backoff_base_s=0.01, backoff_max_s=0.05
    )
    monkeypatch.setattr(cli_remote, "HttpLabelTarget", fast)

    def run(args: list[str]) -> Ran:
        capsys.readouterr()
        rc = main(args)
        got = capsys.readouterr()
        return Ran(rc, got.out, got.err)

    return run


def ql_args(grey: str) -> list[str]:
    return ["attack", grey, *QL, "--seed", "0", "--checkpoint-every", "2"]


def command_in(line: str, marker: str) -> list[str]:
    """The command a message tells the user to run, as argv for main()."""
    words = shlex.split(line.split(marker, 1)[1].split(" (", 1)[0])
    assert words[:2] == ["bbattack", "attack"], line
    return words[1:]


def outcome(out: Path) -> dict[str, Any]:
    """What a run found: result.json without its timing, provenance (which journal run) and
    HTTP transport counters, and the adversarial image's digest."""
    doc: dict[str, Any] = json.loads((out / "result.json").read_text())
    for key in ("wall_time_s", "provenance"):
        doc.pop(key)
    for key in ("http_calls", "retries"):
        doc.get("remote", {}).pop(key, None)
    doc["adv.png"] = hashlib.sha256((out / "adv.png").read_bytes()).hexdigest()
    return doc


def names(out: Path) -> set[str]:
    """What a run folder holds, checkpoints and hidden files included."""
    return {str(p.relative_to(out)) for p in out.rglob("*")}


def paid(journal: Path) -> list[tuple[int, str]]:
    """The journal's paid queries (sequence number, input digest), in order."""
    with closing(sqlite3.connect(journal)) as db:
        rows = db.execute("SELECT seq, digest FROM queries WHERE status = 'paid' ORDER BY seq")
        return [(int(s), str(d)) for s, d in rows]


class Gate:
    """A service's model that, on call ``hold_at``, says so and waits to be released (the
    service bills a call before it runs its model, so a kill then lands in a billed call)."""

    def __init__(self, hold_at: int) -> None:
        self.hold_at, self.calls = hold_at, 0
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        self.calls += 1
        if self.calls == self.hold_at:
            self.entered.set()
            self.release.wait(60)
        return colour_logits(x)
