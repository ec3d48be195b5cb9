"""Billed = reported: ``bbattack attack --endpoint`` SIGKILLed while the label service is
working on a call it has already billed, then resumed. The rows that were sent and never
answered count as ``lost_billed`` in result.json, and ``paid_queries + lost_billed`` is what
the service billed. And, on the journal itself: an interrupted call stays billed, a refused
one does not, and the resumed run's spend cap counts what was billed.

The service's model blocks on one chosen call (the service bills a call before it runs its
model), so the kill lands in the middle of a billed call every time, not by chance."""

from __future__ import annotations

import functools
import json
import os
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
from numpy.typing import NDArray
from PIL import Image

import bbattack.cli._remote as cli_remote
from bbattack import CallableClassifier, imagenet_classes
from bbattack.cli import main
from bbattack.errors import TargetUnavailable
from bbattack.oracle import TopK
from bbattack.oracle.journal import Journal
from bbattack.remote import HttpLabelTarget, QuotaExhausted
from bbattack.service import create_app
from bbattack.service.runner import serve_in_thread
from bbattack.targets import LabelTarget
from crash_driver import colour_logits
from kill_support import Gate

DRIVER = str(Path(__file__).resolve().parents[1] / "crash_driver.py")
KEY = "billing-kill-key-0001"


@pytest.fixture
def service() -> Iterator[tuple[str, Any, Gate]]:
    gate = Gate(hold_at=8)
    model = CallableClassifier(
        gate, (3, 224, 224), 1000, class_names=imagenet_classes(), name="colour"
    )
    app = create_app(model, api_keys=[KEY])
    try:
        with serve_in_thread(app) as url:
            yield url, app, gate
    finally:
        gate.release.set()


def billed(app: Any) -> int:
    return int(app.state.usage.get(KEY, 0))


def test_a_kill_during_a_billed_call_is_reported_as_billed(
    service: tuple[str, Any, Gate],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, app, gate = service
    grey, green, out = tmp_path / "grey.png", tmp_path / "green.png", tmp_path / "run"
    Image.new("RGB", (32, 32), (130, 128, 128)).save(grey)
    Image.new("RGB", (32, 32), (100, 160, 100)).save(green)
    args = [
        *["attack", str(grey), "--threat", "pi", "--attack", "pi", "--target", "Cat"],
        *["--start-image", str(green), "--success", "topk", "--max-queries", "300"],
        *["--param", "samples=10", "--seed", "0", "--checkpoint-every", "2"],
        *["--endpoint", f"{url}/v1/images:annotate", "--api-key", KEY, "--max-results", "20"],
    ]
    proc = subprocess.Popen(
        [sys.executable, DRIVER, *args, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "CRASH_FAST_RETRIES": "1"},
    )
    try:
        assert gate.entered.wait(120), "the attack never reached the held call"
        time.sleep(0.5)  # the other calls of that batch reach the service and are billed
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        gate.release.set()
    assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(out / "journal.sqlite") as db:
        (sent,) = db.execute("SELECT COUNT(*) FROM queries WHERE status = 'sent'").fetchone()
    assert sent > 0, "the kill did not land in the middle of a call"
    assert billed(app) > 0

    fast = functools.partial(
        HttpLabelTarget, max_retries=30, backoff_base_s=0.01, backoff_max_s=0.05
    )
    monkeypatch.setattr(cli_remote, "HttpLabelTarget", fast)
    capsys.readouterr()
    rc = main([*args, "--resume", str(out)])
    got = capsys.readouterr()
    assert rc == 0, got.err
    doc = json.loads((out / "result.json").read_text())
    remote, journal = doc["remote"], doc["provenance"]["journal"]
    assert remote.get("lost_billed") == sent == journal.get("lost_billed")
    assert remote["paid_queries"] + remote.get("lost_billed", 0) == billed(app)
    assert remote["cost_usd"] == pytest.approx(billed(app) * 1.5 / 1000)
    assert journal["lost"] >= sent


class Billed:
    """A label source that bills each image, with a spend cap of 10 images per process."""

    input_shape = (3, 4, 4)
    billed = True
    eight_bit = True
    remaining_queries = 10

    def annotate(self, x: NDArray[np.float32]) -> list[list[tuple[str, float]]]:
        return [[("dog", 0.9)] for _ in x]


@pytest.mark.parametrize(
    ("error", "billed_after"),
    [(KeyboardInterrupt(), 1), (TargetUnavailable("the service said no"), 0)],
)
def test_a_call_that_fails_mid_way_counts_as_billed_unless_the_target_refused_it(
    tmp_path: Path, error: BaseException, billed_after: int
) -> None:
    """A call interrupted (or crashed) mid-way may have been billed: its row stays 'sent',
    counts as lost_billed before and after a resume, and against the spend cap of the resumed
    run. A call the target refused (its own error) was not billed: 'lost'."""
    target, view = LabelTarget(Billed()), TopK(5)
    x = (np.random.default_rng(0).integers(0, 256, (3, 3, 4, 4)) / 255).astype(np.float32)
    ids = np.zeros(3, np.int64)
    path = tmp_path / "journal.sqlite"
    with Journal(path) as journal:
        run = journal.new_run()
        journal.attach(target, view)
        journal.answer(x[:2], ids[:2], "init", view, lambda a: target.observe(a, view))

        def fails(a: NDArray[np.float32]) -> Any:
            raise error

        with pytest.raises(type(error)):
            journal.answer(x[2:], ids[2:], "init", view, fails)
        assert journal.stats().paid == 2
        assert journal.stats().lost_billed == billed_after
    with Journal(path) as again:
        again.resume_run(run)
        again.attach(target, view)
        again.seek(run, 2)
        assert again.stats().lost_billed == billed_after  # moved to ``lost``, still billed
        assert again.stats().lost == 1
        assert again.query_limit(10) == 10 - 2 - billed_after


def test_the_answered_calls_of_a_batch_that_hits_the_quota_count_as_billed(
    tmp_path: Path,
) -> None:
    """A batch of 4 images in calls of 2: the first call is billed, the second passes the
    quota and is refused. The batch fails (the attack stops: quota), and its first two rows
    count as lost_billed: paid + lost_billed = billed. A replay stops there the same way."""
    model = CallableClassifier(
        colour_logits, (3, 224, 224), 1000, class_names=imagenet_classes(), name="colour"
    )
    app = create_app(model, api_keys=[KEY], quota=3)
    x = np.stack([np.full((3, 224, 224), v, np.float32) for v in (0.2, 0.4, 0.6, 0.8)])
    path, view = tmp_path / "journal.sqlite", TopK(5)
    with serve_in_thread(app) as url:
        client = HttpLabelTarget(
            f"{url}/v1/images:annotate", KEY, images_per_call=2, concurrency=1, max_results=5
        )
        target = LabelTarget(client)
        with client, Journal(path) as journal:
            run = journal.new_run()
            journal.attach(target, view)
            with pytest.raises(QuotaExhausted) as e:
                journal.answer(x, np.zeros(4, np.int64), "init", view, target_observe(target))
            assert e.value.billed_rows == (0, 1)
            stats = journal.stats()
    assert billed(app) == 2
    assert stats.paid + stats.lost_billed == billed(app)
    assert (stats.lost_billed, stats.lost) == (2, 4)
    with Journal(path, read_only=True) as replay:
        replay.replay_run(run)
        replay.attach(target, view)
        with pytest.raises(TargetUnavailable) as stop:
            replay.answer(x, np.zeros(4, np.int64), "init", view, target_observe(target))
        assert getattr(stop.value, "stop_reason", None) == "quota"


def target_observe(target: LabelTarget) -> Any:
    return lambda a: target.observe(a, TopK(5))
