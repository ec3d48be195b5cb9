"""Billed = reported for every wire schema (tests/remote/test_billing_kill.py does it for
Google alone): ``bbattack attack --endpoint URL --schema S`` SIGKILLed while ``bbattack serve
--schema S`` works on a call it has already billed, then resumed, pays nothing twice.

The service's model blocks on one chosen call (the service bills a call before its model runs,
and runs one call at a time: the calls behind the held one are billed and wait too), so the kill
lands in the middle of billed calls every time. APIs that take one image a call (Rekognition,
Azure, Hugging Face, JSON) answer a batch of the attack in several calls, 4 in flight: at the
kill, the journal's unanswered rows ('sent') are at least what the service billed and never
answered; where one call takes the whole batch (Google, Clarifai) they are exactly that."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from bbattack import CallableClassifier, imagenet_classes
from bbattack.service.runner import serve_in_thread
from crash_driver import start
from kill_support import Gate, Here, make_here, paid
from schema_support import APIS, GOLDISH, GREEN, Api, label_app, solid

# One call takes a whole batch of the attack (its 10 NES samples) under these schemas.
BATCHED = {"gcv", "clarifai"}


class Served:
    def __init__(self, api: Api, app: Any, url: str, gate: Gate) -> None:
        self.api, self.app, self.url, self.gate = api, app, url, gate

    def billed(self) -> int:
        return int(self.app.state.usage.get(self.api.billed_as, 0))


@pytest.fixture(params=list(APIS))
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    api = APIS[request.param]
    # In the attack's first batch of NES samples: its 3rd call (after the clean image's and
    # the start image's) where one call takes the batch, its 4th image's call otherwise.
    gate = Gate(hold_at=3 if api.schema in BATCHED else 6)
    model = CallableClassifier(
        gate, (3, 224, 224), 1000, class_names=imagenet_classes(), name="colour"
    )
    app = label_app(api, model)
    try:
        with serve_in_thread(app) as url:
            yield Served(api, app, url, gate)
    finally:
        gate.release.set()


@pytest.fixture
def here(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Here:
    return make_here(monkeypatch, capsys)


def count(journal: Path, status: str) -> int:
    with closing(sqlite3.connect(journal)) as db:
        (n,) = db.execute("SELECT COUNT(*) FROM queries WHERE status = ?", (status,)).fetchone()
        return int(n)


def test_a_kill_mid_call_and_a_resume_pay_nothing_twice(
    served: Served, tmp_path: Path, here: Here
) -> None:
    api, out = served.api, tmp_path / "run"
    image, green = solid(tmp_path / "gold.png", GOLDISH), solid(tmp_path / "green.png", GREEN)
    args = [
        *["attack", image, "--threat", "pi", "--attack", "pi", "--target", api.tabby],
        *["--start-image", green, "--success", api.success, "--max-queries", "40"],
        *["--param", "samples=10", "--seed", "0", "--checkpoint-every", "2"],
        *api.argv(served.url),
    ]
    log = tmp_path / "log"
    proc = start([*args, "--out", str(out)], str(log), CRASH_FAST_RETRIES="1")
    try:
        assert served.gate.entered.wait(60), f"the held call never came: {log.read_text()}"
        time.sleep(0.5)  # the calls in flight beside it reach the service and are billed
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
        time.sleep(0.2)
        at_kill = served.billed()
    finally:
        if proc.exitcode is None:
            proc.kill()
        served.gate.release.set()
    assert proc.exitcode == -signal.SIGKILL
    journal = out / "journal.sqlite"
    sent, paid_before = count(journal, "sent"), count(journal, "paid")
    unanswered = at_kill - paid_before  # billed by the service, never answered
    assert 0 < unanswered <= sent, (unanswered, sent)
    if api.schema in BATCHED:
        assert unanswered == sent

    again = here([*args, "--resume", str(out)])
    assert again.returncode == 0, again.stderr
    doc = json.loads((out / "result.json").read_text())
    remote, record = doc["remote"], doc["provenance"]["journal"]
    rows = paid(journal)
    # Nothing paid twice: every paid row is another image, and the resumed run paid (and the
    # service billed) only the rows it added.
    assert len({digest for _, digest in rows}) == len(rows) == remote["paid_queries"]
    assert served.billed() - at_kill == len(rows) - paid_before
    # The kill's loss is on record: the unanswered rows count as billed.
    assert remote["lost_billed"] == sent == record["lost_billed"]
    assert remote["paid_queries"] <= served.billed() <= remote["paid_queries"] + sent
    price = remote["price_per_1000"]
    if price is not None:
        assert remote["cost_usd"] == pytest.approx((len(rows) + sent) * price / 1000)
