"""Fuzz over the moments a ``bbattack attack`` run can be killed or its disk fill up; whatever
the moment, what the user does next (``--resume DIR``, or the command a one-line refusal gives)
ends with the unbroken run's result, in a folder that holds what an unbroken run's holds.

* KILL points (hypothesis draws one): SIGKILL after n answered queries (between two batches),
  from outside once the journal holds n queries (any instant: in a commit, a checkpoint, an
  output), on entering a function (the k-th journal commit or checkpoint write, run.json's
  write, the outputs' writing, the checkpoints' removal), or once a file is renamed into place.
  No traceback anywhere; the result (success, queries, the adversarial image's digest ...)
  equals the unbroken run's; every query is paid once (local: the journal's paid rows are the
  unbroken run's; over HTTP: paid + lost_billed is what the service billed).
* DISK-FULL points: ENOSPC (or SQLite's "disk is full") at the n-th checkpoint write, journal
  commit or output file, in this process: one ``error:`` line, no traceback, and the command it
  gives (or the same one) finishes with the unbroken result.

Kills run in processes forked from a server that imported bbattack once (crash_driver.start);
the commands after them run in this process, on the colour model."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image

import bbattack.attacks.checkpoint as checkpoint
import bbattack.report as report
from bbattack.oracle._journal_db import Transaction
from bbattack.service import create_app
from bbattack.service.runner import serve_in_thread
from crash_driver import colour_model, start
from kill_support import Here, Ran, command_in, make_here, names, outcome, paid, ql_args

KEY = "kill-fuzz-key-0001"
FUZZ = settings(
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def here(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Here:
    return make_here(monkeypatch, capsys)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Grey (a golden retriever, just) and a green start image (a tabby)."""
    root = tmp_path_factory.mktemp("images")
    grey, green = root / "grey.png", root / "green.png"
    Image.new("RGB", (32, 32), (130, 128, 128)).save(grey)
    Image.new("RGB", (32, 32), (100, 160, 100)).save(green)
    return str(grey), str(green)


def last_seq(journal: Path) -> int:
    """The journal's last query (closed at once: an open reader keeps the run's own close
    from folding the WAL back, and a connection is freed only by the cycle collector)."""
    try:
        with closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as db:
            return int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM queries").fetchone()[0])
    except sqlite3.Error:  # not there yet, or being created
        return 0


Kill = tuple[str, str]  # (CRASH_* variable, its value) or ("outside", n queries)
ONCE = [
    "bbattack.cli.attack:load_model",
    "bbattack.cli._rundir:RunRecord.write",
    "bbattack.cli.attack:write_outputs",
    "bbattack.report:save_figure",
    "bbattack.report:save_trace_plot",
    "bbattack.cli.attack:remove_checkpoints",
]
MANY = {
    "bbattack.oracle._journal_db:Transaction._commit": 41,
    "bbattack.attacks.checkpoint:_write": 9,
}


def kills(queries: int, local: bool) -> st.SearchStrategy[Kill]:
    """Where to kill a run of ``queries`` queries; from outside (at any instant) only a local
    run (see the HTTP test), and a label API's run loads no model."""
    n = st.integers(1, queries - 1).map(str)
    once = ONCE if local else [f for f in ONCE if not f.endswith(":load_model")]
    many = st.sampled_from(sorted(MANY)).flatmap(
        lambda f: st.integers(1, MANY[f]).map(lambda k: ("CRASH_KILL_IN", f"{f}@{k}"))
    )
    return st.one_of(
        n.map(lambda v: ("CRASH_KILL_AT", v)),
        *([n.map(lambda v: ("outside", v))] if local else []),
        st.sampled_from(once).map(lambda f: ("CRASH_KILL_IN", f)),
        many,
        st.sampled_from(["inputs.npz", "run.json", "adv.png", "result.json"]).map(
            lambda f: ("CRASH_KILL_AFTER", f)
        ),
    )


def kill_run(args: list[str], out: Path, kill: Kill) -> None:
    """Run, and kill it as ``kill`` says (a run that ends first is fine: then it is whole)."""
    log = out.with_name("killed.log")
    if kill[0] == "outside":
        proc = start([*args, "--out", str(out)], str(log), CRASH_SLOW_S="0.005")
        deadline = time.monotonic() + 120
        while proc.is_alive() and time.monotonic() < deadline:
            if last_seq(out / "journal.sqlite") >= int(kill[1]):
                os.kill(proc.pid or 0, signal.SIGKILL)
                break
            time.sleep(0.002)
    else:
        proc = start([*args, "--out", str(out)], str(log), CRASH_FAST_RETRIES="1", **dict([kill]))
    proc.join(120)
    text = log.read_text()
    assert proc.exitcode in (0, -signal.SIGKILL), text
    assert "Traceback" not in text, text
    event(f"{kill[0]}: {'killed' if proc.exitcode else 'ran to its end'}")


def go_on(here: Here, args: list[str], out: Path) -> Ran:
    """What a user does after a kill: the same command with ``--resume DIR``; where that is
    refused (one line), the command the line gives."""
    again = here([*args, "--resume", str(out)])
    if again.returncode == 2:
        line = again.one_error_line()
        again = here(command_in(line, "with: "))
    assert again.returncode == 0, again.stderr
    return again.no_traceback()


# -- kills, against a local model


@pytest.fixture(scope="module")
def whole(images: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "run"
    proc = start([*ql_args(images[0]), "--out", str(out)], str(out.with_name("run.log")))
    proc.join(120)
    assert proc.exitcode == 0, out.with_name("run.log").read_text()
    return out


@settings(FUZZ, max_examples=6)
@given(kill=kills(200, local=True))
@example(kill=("CRASH_KILL_IN", "bbattack.cli._rundir:RunRecord.write"))
@example(kill=("CRASH_KILL_AFTER", "result.json"))
@example(kill=("outside", "90"))
def test_fuzz_a_killed_run_resumes_to_the_unbroken_result(
    here: Here, images: tuple[str, str], whole: Path, kill: Kill
) -> None:
    args = ql_args(images[0])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        kill_run(args, out, kill)
        go_on(here, args, out)
        assert outcome(out) == outcome(whole), kill
        assert names(out) == names(whole), kill  # nothing a kill left behind
        assert paid(out / "journal.sqlite") == paid(whole / "journal.sqlite"), kill


# -- kills, against a label API over HTTP: the service's bill is the journal's


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[str, Any]]:
    app = create_app(colour_model(), api_keys=[KEY])
    with serve_in_thread(app) as url:
        yield url, app


# The 5th commit records the first paid answer: killed there, the call is billed and lost.
LOST = ("CRASH_KILL_IN", "bbattack.oracle._journal_db:Transaction._commit@5")


def http_args(url: str, images: tuple[str, str]) -> list[str]:
    grey, green = images
    return [
        *["attack", grey, "--threat", "pi", "--attack", "pi", "--target", "Cat"],
        *["--start-image", green, "--success", "topk", "--max-queries", "120"],
        *["--param", "samples=10", "--seed", "0", "--checkpoint-every", "2"],
        *["--endpoint", f"{url}/v1/images:annotate", "--api-key", KEY, "--max-results", "20"],
    ]


def billed(app: Any) -> int:
    return int(app.state.usage.get(KEY, 0))


@pytest.fixture(scope="module")
def whole_http(
    service: tuple[str, Any], images: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, int]:
    """The unbroken run over HTTP, and what the service billed for it."""
    url, app = service
    out, before = tmp_path_factory.mktemp("whole-http") / "run", billed(app)
    proc = start([*http_args(url, images), "--out", str(out)], str(out.with_name("run.log")))
    proc.join(120)
    assert proc.exitcode == 0, out.with_name("run.log").read_text()
    return out, billed(app) - before


@settings(FUZZ, max_examples=4)
@given(kill=kills(110, local=False))
@example(kill=LOST)
def test_fuzz_a_killed_run_over_http_pays_what_the_service_billed(
    here: Here,
    images: tuple[str, str],
    service: tuple[str, Any],
    whole_http: tuple[Path, int],
    kill: Kill,
) -> None:
    """Kills between calls and in commits (a paid answer not yet on record: billed, never
    used, asked again): paid + lost_billed is exactly the service's bill. (A kill in the
    instant between noting a call and sending it counts it as billed, unbilled: not drawn.)"""
    (url, app), (whole, bill) = service, whole_http
    args = http_args(url, images)
    with tempfile.TemporaryDirectory() as tmp:
        out, before = Path(tmp) / "run", billed(app)
        kill_run(args, out, kill)
        go_on(here, args, out)
        remote = outcome(out)["remote"]
        event(f"lost_billed: {remote['lost_billed']}")
        assert remote["lost_billed"] > 0 or kill != LOST
        assert remote["paid_queries"] + remote["lost_billed"] == billed(app) - before, kill
        assert billed(app) - before == bill + remote["lost_billed"], kill
        got, want = outcome(out), outcome(whole)
        for doc in (got, want):
            doc["remote"].pop("lost_billed"), doc["remote"].pop("cost_usd")
        assert got == want, kill
        assert names(out) == names(whole), kill


# -- a full disk at the n-th write, in this process


def full_at(n: int, error: BaseException, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, until the disk fills at call ``n``: it raises ``error`` from then on."""
    count = [0]

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        if count[0] >= n:
            raise error
        return fn(*args, **kwargs)

    return wrapped


ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
SITES: dict[str, tuple[Any, str, BaseException, int]] = {
    "checkpoint": (checkpoint, "_write", ENOSPC, 9),
    "commit": (Transaction, "_commit", sqlite3.OperationalError("database or disk is full"), 41),
    "outputs": (report, "write_atomic", ENOSPC, 2),
}


@settings(FUZZ, max_examples=6)
@given(
    site=st.sampled_from(sorted(SITES)).flatmap(
        lambda s: st.tuples(st.just(s), st.integers(1, SITES[s][3]))
    )
)
@example(site=("commit", 1))
@example(site=("outputs", 1))
def test_fuzz_a_full_disk_is_one_line_and_its_command_finishes_the_run(
    here: Here,
    images: tuple[str, str],
    whole: Path,
    site: tuple[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    owner, name, error, _ = SITES[site[0]]
    args = ql_args(images[0])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        with monkeypatch.context() as m:
            m.setattr(owner, name, full_at(site[1], error, getattr(owner, name)))
            broken = here([*args, "--out", str(out)])
        event(f"{site[0]}: exit {broken.returncode}")
        if broken.returncode != 0:
            assert broken.returncode == 2, broken.stderr
            line = broken.one_error_line()
            assert "disk is full" in line, line
            if "resume with: " in line:
                again = here(command_in(line, "resume with: "))
            else:  # before the first query: nothing was sent, the same command again
                assert "nothing was sent" in line, line
                again = here([*args, "--out", str(out)])
            assert again.returncode == 0, again.stderr
            again.no_traceback()
        assert outcome(out) == outcome(whole), site
        assert names(out) == names(whole), site
        assert paid(out / "journal.sqlite") == paid(whole / "journal.sqlite"), site
