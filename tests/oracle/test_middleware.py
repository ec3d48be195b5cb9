"""Middleware above the journal: it sees every query, repeats included; its state is part of
a checkpoint, so a killed and resumed run meets it as an unbroken run would."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from bbattack import AttackResult, Oracle, Scores, TorchClassifier
from bbattack.attacks import registry
from bbattack.attacks.checkpoint import Checkpointer, Every
from bbattack.errors import TargetUnavailable
from bbattack.oracle import Forward, Middleware, Observation, Query
from bbattack.oracle.journal import Journal
from support import Task


class Rejected(TargetUnavailable):
    stop_reason: ClassVar[str] = "rejected"


class Detector(Middleware):
    """A toy query detector: counts what one key asks and refuses from the ``limit``-th on."""

    name = "detector"

    def __init__(self, limit: int, resumable: bool = True) -> None:
        self.limit, self.resumable = limit, resumable
        self.seen = 0
        self.kinds: list[str] = []

    def handle(self, query: Query, forward: Forward) -> Observation:
        self.seen += len(query.ids)
        self.kinds += [query.kind] * len(query.ids)
        if self.seen >= self.limit:
            raise Rejected(f"{query.key}: too many similar queries")
        return forward(query.x)

    def snapshot(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def restore(self, snap: dict[str, Any]) -> None:
        if self.resumable:  # off: a defence whose store starts empty after a restart
            self.seen = int(snap["seen"])


class _Killed(Exception):  # noqa: N818 - a stand-in for SIGKILL
    pass


def _attempt(
    model: TorchClassifier, task: Task, d: Path, det: Detector, kill: int | None, resume: bool
) -> AttackResult | None:
    journal = Journal(d / "journal.sqlite")
    journal.resume_run(1) if resume else journal.new_run()
    oracle = Oracle(model, Scores(), max_queries=200, journal=journal, middleware=[det])

    def on_step(info: Any) -> None:
        if info.step == kill:
            raise _Killed

    attack = registry.build("square", eps=0.05)
    go = attack.resume if resume else attack.run
    try:
        return go(
            oracle, task.x[:1], task.target[:1], seed=3, on_step=on_step,
            checkpoints=Checkpointer(d / "ckpt", Every(steps=4)),
        )  # fmt: skip
    except _Killed:
        return None
    finally:
        journal.close()


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    return tmp_path / "a", tmp_path / "b"


def test_a_middleware_sees_every_query_and_can_refuse(
    digits_torch: TorchClassifier, task: Task, dirs: tuple[Path, Path]
) -> None:
    det = Detector(limit=30)
    res = _attempt(digits_torch, task, dirs[0], det, None, False)
    assert res is not None
    r = res.images[0]
    assert r.stop_reason == "rejected"
    assert not r.success
    # The refused query is charged (it was sent); nothing is sent after it, not even the
    # final verification.
    assert r.queries == det.seen == 30
    assert det.kinds[:2] == ["init", "init"]


def test_a_resumed_run_resumes_the_middleware_state(
    digits_torch: TorchClassifier, task: Task, dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = dirs
    whole = _attempt(digits_torch, task, a, Detector(limit=30), None, False)
    assert _attempt(digits_torch, task, b, Detector(limit=30), 10, False) is None
    resumed_det = Detector(limit=30)
    resumed = _attempt(digits_torch, task, b, resumed_det, None, True)
    assert whole is not None
    assert resumed is not None
    assert resumed.images[0].model_dump(exclude={"wall_time_s"}) == whole.images[0].model_dump(
        exclude={"wall_time_s"}
    )
    assert np.array_equal(resumed.x_adv, whole.x_adv)
    assert resumed_det.seen == 30  # the repeats the journal answered went through it too
    # A defence whose state were lost on restart would have let the attack run longer.
    c = tmp_path / "c"
    c.mkdir()
    assert _attempt(digits_torch, task, c, Detector(limit=30), 10, False) is None
    fresh = _attempt(digits_torch, task, c, Detector(limit=30, resumable=False), None, True)
    assert fresh is not None
    assert fresh.images[0].queries > whole.images[0].queries


def test_a_checkpoint_with_another_stack_is_refused(digits_torch: TorchClassifier) -> None:
    snap = Oracle(digits_torch, Scores(), middleware=[Detector(5)]).snapshot()
    with pytest.raises(ValueError, match="middleware"):
        Oracle(digits_torch, Scores()).restore(snap)


def test_stop_reasons_come_from_the_exception_classes() -> None:
    from bbattack.errors import TARGET_DOWN_REASONS
    from bbattack.remote.errors import QuotaExhausted, RemoteAuthError, RemoteUnavailable

    assert {"rejected", "target_unavailable"} <= TARGET_DOWN_REASONS  # Rejected: defined above
    for cls in (QuotaExhausted, RemoteAuthError, RemoteUnavailable):
        assert cls.stop_reason in TARGET_DOWN_REASONS
