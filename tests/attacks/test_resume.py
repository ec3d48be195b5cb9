"""Issue 10, in process: every attack, killed at a step and resumed from its last checkpoint
and its journal, ends exactly as an unbroken run; checkpoints are plain data, written
atomically, and a damaged one falls back to the one before."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bbattack import AttackResult, Label, Labels, Oracle, Scores, TopK, TorchClassifier, View
from bbattack.attacks import registry
from bbattack.attacks.checkpoint import Checkpointer, CheckpointError, Every, Interrupted
from bbattack.oracle.journal import Journal, JournalError
from bbattack.surrogates import Surrogate, resolve_surrogates
from support import Task


@dataclass(frozen=True)
class Case:
    attack: str
    view: View
    targeted: bool = True
    params: dict[str, Any] | None = None
    start: bool = False
    surrogate: bool = False
    budget: int = 300


CASES = {
    "square-linf": Case("square", Scores(), params={"eps": 0.2}),
    "square-l2-untargeted": Case("square", Scores(), False, {"norm": "l2", "eps": 1.0}),
    "bandits": Case(
        "bandits",
        Scores(),
        params={"eps": 0.2, "image_lr": 0.02, "tile_size": 2, "online_lr": 1, "fd_eta": 0.5},
    ),
    "simba": Case("simba", Scores(), params={"norm": "l2", "eps": 2.0, "step": 0.5}, budget=80),
    "parsimonious": Case(
        "parsimonious", Scores(), params={"eps": 0.2, "block_size": 4, "batch_size": 8}
    ),
    "ql": Case("ql", Scores(), params={"eps": 0.2, "samples": 10}, budget=400),
    "pi": Case("pi", TopK(1), params={"eps": 0.3, "samples": 10}, start=True, budget=400),
    "lo": Case(
        "lo",
        Labels(1),
        params={"eps": 0.3, "samples": 4, "noise_samples": 3, "mu": 0.01},
        start=True,
        budget=400,
    ),
    "pi-square": Case("pi-square", TopK(1), params={"eps": 0.1}, start=True, budget=80),
    "rays": Case("rays", Label(), False, {"eps": 0.05}, budget=80),
    "transfer-scores": Case("transfer", Scores(), True, {"eps": 0.05}, surrogate=True, budget=80),
    "transfer-labels": Case("transfer", Labels(1), False, {"eps": 0.05}, surrogate=True, budget=80),
    # The guided ε-shrink, then PI-Square's repairs (top-k) or the stall stop (labels).
    "transfer-pi": Case(
        "transfer", TopK(1), params={"eps": 0.05}, start=True, surrogate=True, budget=120
    ),
    "transfer-lo": Case(
        "transfer", Labels(1), params={"eps": 0.05}, start=True, surrogate=True, budget=120
    ),
    "gfcs": Case("gfcs", Scores(), params={"eps": 1.0}, surrogate=True, budget=80),
    # An HSJ step is a whole iteration (100·√t probes and two searches).
    "hsj": Case("hsj", Label(), params={"eps": 0.02}, start=True, budget=2000),
    "hsj-l2-untargeted": Case("hsj", Label(), False, {"norm": "l2", "eps": 0.1}, budget=2000),
}


@pytest.fixture(scope="module")
def cnn(digits_cnn: TorchClassifier, digits_torch: TorchClassifier) -> list[Surrogate]:
    return resolve_surrogates([digits_cnn], digits_torch)


class Killed(Exception):  # noqa: N818 - a stand-in for a signal
    """Stands in for SIGKILL: raised from inside the run loop, nothing is cleaned up."""


def attempt(
    case: Case,
    model: TorchClassifier,
    task: Task,
    surrogates: list[Surrogate],
    d: Path,
    *,
    kill_at: int | None = None,
    resume: bool = False,
    every: Every | None = None,
) -> tuple[AttackResult | None, list[int]]:
    """One process's worth of the run in ``d``: its result (None: killed), the steps it made."""
    journal = Journal(d / "journal.sqlite")
    if resume:
        journal.resume_run(1)
    else:
        journal.new_run()
    oracle = Oracle(model, case.view, max_queries=case.budget, journal=journal)
    attack = registry.build(case.attack, **(case.params or {}))
    checkpoints = Checkpointer(d / "ckpt", every or Every(steps=4))
    steps: list[int] = []

    def on_step(info: Any) -> None:
        steps.append(info.step)
        if info.step == kill_at:
            raise Killed

    kw: dict[str, Any] = {
        "seed": 5,
        "start": task.start[:2] if case.start else None,
        "surrogates": surrogates if case.surrogate else (),
        "on_step": on_step,
        "checkpoints": checkpoints,
    }
    target = task.target[:2] if case.targeted else None
    go = attack.resume if resume else attack.run
    try:
        return go(oracle, task.x[:2], target, **kw), steps
    except Killed:
        return None, steps
    finally:
        journal.close()


def same(a: AttackResult, b: AttackResult) -> None:
    assert np.array_equal(a.x_adv, b.x_adv)
    for ra, rb in zip(a.images, b.images, strict=True):
        assert ra.model_dump(exclude={"wall_time_s"}) == rb.model_dump(exclude={"wall_time_s"})
    assert a.trace == b.trace


def paid(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as db:
        return [
            (int(s), str(d))
            for s, d in db.execute(
                "SELECT seq, digest FROM queries WHERE status = 'paid' ORDER BY seq"
            )
        ]


@pytest.mark.parametrize("name", list(CASES))
def test_a_killed_run_resumes_to_the_unbroken_result(
    name: str,
    digits_torch: TorchClassifier,
    task: Task,
    cnn: list[Surrogate],
    tmp_path: Path,
) -> None:
    case = CASES[name]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole, steps = attempt(case, digits_torch, task, cnn, tmp_path / "a")
    assert whole is not None
    assert len(steps) >= 6, f"{name}: too short a run to kill in the middle ({len(steps)} steps)"
    kill = len(steps) // 2 + 3
    none, seen = attempt(case, digits_torch, task, cnn, tmp_path / "b", kill_at=kill)
    assert none is None
    assert seen[-1] == kill
    resumed, again = attempt(case, digits_torch, task, cnn, tmp_path / "b", resume=True)
    assert resumed is not None
    # From the last checkpoint (every 4 steps), not from the start.
    assert again[0] == 4 * ((kill - 1) // 4) + 1
    same(resumed, whole)
    # Every query was paid once; those between the checkpoint and the kill came from the
    # journal on resume.
    assert paid(tmp_path / "b" / "journal.sqlite") == paid(tmp_path / "a" / "journal.sqlite")
    with sqlite3.connect(tmp_path / "b" / "journal.sqlite") as db:
        (from_journal,) = db.execute(
            "SELECT from_journal FROM sessions WHERE mode = 'resume'"
        ).fetchone()
    assert from_journal > 0


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(
    digits_torch: TorchClassifier, task: Task, cnn: list[Surrogate], tmp_path: Path
) -> None:
    case = CASES["square-linf"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole, steps = attempt(case, digits_torch, task, cnn, tmp_path / "a")
    assert whole is not None
    assert len(steps) >= 10
    attempt(case, digits_torch, task, cnn, tmp_path / "b", kill_at=len(steps) - 1)
    ckpts = Checkpointer(tmp_path / "b" / "ckpt").files()
    assert len(ckpts) == 2  # the newest and the one before it; older ones are gone
    raw = bytearray(ckpts[0].read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    ckpts[0].write_bytes(bytes(raw))
    journal = Journal(tmp_path / "b" / "journal.sqlite")
    journal.resume_run(1)
    oracle = Oracle(digits_torch, case.view, max_queries=case.budget, journal=journal)
    checkpoints = Checkpointer(tmp_path / "b" / "ckpt", Every(steps=2))
    attack = registry.build(case.attack, **(case.params or {}))
    res = attack.resume(oracle, task.x[:2], task.target[:2], seed=5, checkpoints=checkpoints)
    journal.close()
    assert len(checkpoints.warnings) == 1
    assert ckpts[0].name in checkpoints.warnings[0]
    assert "damaged" in checkpoints.warnings[0]
    same(res, whole)


def test_a_checkpoint_of_another_config_is_refused(
    digits_torch: TorchClassifier, task: Task, cnn: list[Surrogate], tmp_path: Path
) -> None:
    case = CASES["square-linf"]
    attempt(case, digits_torch, task, cnn, tmp_path, kill_at=5)
    other = Case("square", Scores(), params={"eps": 0.25})
    with pytest.raises(CheckpointError, match="another config"):
        attempt(other, digits_torch, task, cnn, tmp_path, resume=True)


def test_a_resumed_run_must_ask_what_the_journal_holds(
    digits_torch: TorchClassifier, task: Task, cnn: list[Surrogate], tmp_path: Path
) -> None:
    case = CASES["square-linf"]
    attempt(case, digits_torch, task, cnn, tmp_path, kill_at=5)
    for f in Checkpointer(tmp_path / "ckpt").files():
        f.unlink()  # restart from the beginning: the whole tape is checked
    journal = Journal(tmp_path / "journal.sqlite")
    journal.resume_run(1)
    oracle = Oracle(digits_torch, case.view, max_queries=case.budget, journal=journal)
    attack = registry.build("square", eps=0.2)
    with pytest.raises(JournalError, match=r"query 1 differs from the journal: asked u8:"):
        attack.resume(
            oracle, task.x[1:3], task.target[1:3], seed=5, checkpoints=Checkpointer(tmp_path)
        )


def test_a_stop_request_writes_a_checkpoint_and_resumes(
    digits_torch: TorchClassifier, task: Task, cnn: list[Surrogate], tmp_path: Path
) -> None:
    case = CASES["ql"]
    (tmp_path / "a").mkdir()
    whole, _ = attempt(case, digits_torch, task, cnn, tmp_path / "a")
    journal = Journal(tmp_path / "journal.sqlite")
    journal.new_run()
    oracle = Oracle(digits_torch, case.view, max_queries=case.budget, journal=journal)
    attack = registry.build("ql", eps=0.2, samples=10)
    checkpoints = Checkpointer(tmp_path / "ckpt", Every(seconds=3600))

    def ctrl_c(info: Any) -> None:
        if info.step == 3:
            checkpoints.stop_requested = True  # what the CLI's SIGINT handler does

    with pytest.raises(Interrupted) as e:
        attack.run(
            oracle, task.x[:2], task.target[:2], seed=5, on_step=ctrl_c, checkpoints=checkpoints
        )
    journal.close()
    assert e.value.step == 3
    assert [p.name for p in checkpoints.files()] == ["ckpt-00000003.npz"]
    assert whole is not None
    resumed, _ = attempt(case, digits_torch, task, cnn, tmp_path, resume=True)
    assert resumed is not None
    same(resumed, whole)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("50", Every(steps=50)),
        ("30s", Every(seconds=30.0)),
        ("2m", Every(seconds=120.0)),
    ],
)
def test_checkpoint_every_reads_steps_or_time(text: str, want: Every) -> None:
    assert Every.parse(text) == want


@pytest.mark.parametrize("text", ["0", "-3", "1.5", "abc", "10h", ""])
def test_checkpoint_every_refuses_nonsense(text: str) -> None:
    with pytest.raises(CheckpointError.__mro__[1], match="--checkpoint-every"):
        Every.parse(text)
