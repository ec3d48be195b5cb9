"""The contract every registered attack keeps, ours and the wrapped baselines alike.

The cases are built from what each attack declares in the registry (views, norms, goals, start
image, surrogate), so a new attack file is held to this contract the moment it registers:

- the budget is never exceeded, and a budget too small to start is refused before any query;
- the saved image is on the 8-bit grid, and a success is real: inside the ball, of the goal;
- every query is counted under a kind, and the kinds add up to the image's queries;
- a batch equals single runs, and the same seed gives the same result;
- a run killed in the middle and resumed (checkpoint and journal) ends as an unbroken run.

Success itself is not asserted: that is a benchmark's business, not a contract's.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bbattack import (
    AttackResult,
    CallableClassifier,
    Labels,
    Oracle,
    Scores,
    TopK,
    TorchClassifier,
    View,
)
from bbattack.attacks import registry
from bbattack.attacks.checkpoint import Checkpointer, Every
from bbattack.errors import UserInputError
from bbattack.models import Classifier
from bbattack.oracle import QueryKind
from bbattack.oracle.journal import Journal
from bbattack.surrogates import Surrogate, resolve_surrogates
from support import DIGITS_SHAPE, Task

NAMES = list(registry.all_attacks())
VIEWS: dict[str, View] = {"scores": Scores(), "topk": TopK(1), "labels": Labels(1)}
EPS = {"linf": 0.2, "l2": 1.5}  # on 8×8 digits in [0, 1]
BUDGET = 300


@dataclass(frozen=True)
class Case:
    """One attack's contract case, read from its registry entry."""

    name: str
    view: View
    norm: str
    targeted: bool
    start: bool
    surrogate: bool

    def build(self) -> registry.Runnable:
        return registry.build(self.name, norm=self.norm, eps=EPS[self.norm])


def case(name: str) -> Case:
    info = registry.get(name)
    return Case(
        name=name,
        view=VIEWS[info.views[0]],
        norm=info.norms[0],
        targeted=info.targeted,
        start=info.needs_start,
        surrogate=info.uses_surrogate,
    )


@pytest.fixture(scope="module")
def rowwise(digits_torch: TorchClassifier) -> CallableClassifier:
    """The digits MLP, answering one row at a time: a batch's answers then equal single
    answers bit for bit (matrix kernels differ with the batch size), so a batch of images
    must give exactly what single runs give."""
    return CallableClassifier(digits_torch, DIGITS_SHAPE, 10, batch_size=1, name="digits-rows")


@pytest.fixture(scope="module")
def cnn(digits_cnn: TorchClassifier, digits_torch: TorchClassifier) -> list[Surrogate]:
    return resolve_surrogates([digits_cnn], digits_torch)


def run(
    c: Case,
    model: Classifier,
    task: Task,
    cnn: list[Surrogate],
    rows: slice = slice(0, 2),
    *,
    budget: int = BUDGET,
    seeds: list[int] | None = None,
    oracle: Oracle | None = None,
    **kw: Any,
) -> AttackResult:
    n = len(task.x[rows])
    oracle = oracle or Oracle(model, c.view, max_queries=budget)
    return c.build().run(
        oracle,
        task.x[rows],
        task.target[rows] if c.targeted else None,
        seed=seeds if seeds is not None else list(range(3, 3 + n)),
        start=task.start[rows] if c.start else None,
        surrogates=cnn if c.surrogate else (),
        **kw,
    )


@pytest.mark.parametrize("name", NAMES)
def test_the_saved_image_is_on_the_grid_a_success_is_real_and_every_query_has_a_kind(
    name: str, digits_torch: TorchClassifier, task: Task, cnn: list[Surrogate]
) -> None:
    c = case(name)
    oracle = Oracle(digits_torch, c.view, max_queries=BUDGET)
    res = run(c, digits_torch, task, cnn, oracle=oracle)
    x = task.x[:2].astype(np.float64)
    d = (res.x_adv.astype(np.float64) - x).reshape(2, -1)
    size = np.abs(d).max(axis=1) if c.norm == "linf" else np.sqrt((d * d).sum(axis=1))
    assert np.array_equal(np.rint(res.x_adv * 255) / 255, res.x_adv)
    top1 = digits_torch(res.x_adv).argmax(axis=1)
    kinds = {k.value for k in QueryKind}
    for i, r in enumerate(res.images):
        assert r.queries == int(oracle.queries()[i]) <= BUDGET
        assert set(r.queries_by_kind) <= kinds
        assert sum(r.queries_by_kind.values()) == r.queries
        # A success is inside the ball and is what the model says of the saved image (an
        # image whose shrinking radius never reached ε is saved as it is, and failed).
        if r.success:
            assert size[i] <= EPS[c.norm] + 1e-5
            hit = top1[i] == task.target[i] if c.targeted else top1[i] != task.label[i]
            assert hit


@pytest.mark.parametrize("name", NAMES)
@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(budget=st.integers(1, 60))
def test_the_budget_is_never_exceeded(
    name: str, digits_torch: TorchClassifier, task: Task, cnn: list[Surrogate], budget: int
) -> None:
    c = case(name)
    oracle = Oracle(digits_torch, c.view, max_queries=budget)
    try:
        res = run(c, digits_torch, task, cnn, oracle=oracle)
    except UserInputError:  # too small to start: refused before any query
        assert oracle.total_queries == 0
        return
    assert all(r.queries <= budget for r in res.images)
    assert oracle.queries().tolist() == [r.queries for r in res.images]


def _same(a: AttackResult, b: AttackResult, i: int = 0, j: int = 0) -> None:
    np.testing.assert_array_equal(a.x_adv[i], b.x_adv[j])
    ra, rb = a.images[i], b.images[j]
    skip = {"wall_time_s", "index"}
    assert ra.model_dump(exclude=skip) == rb.model_dump(exclude=skip)


@pytest.mark.parametrize("name", NAMES)
def test_a_batch_equals_single_runs_and_a_seed_repeats(
    name: str, rowwise: CallableClassifier, task: Task, cnn: list[Surrogate]
) -> None:
    c = case(name)
    batch = run(c, rowwise, task, cnn, slice(0, 3), budget=120, seeds=[7, 8, 9])
    again = run(c, rowwise, task, cnn, slice(0, 3), budget=120, seeds=[7, 8, 9])
    for i in range(3):
        _same(batch, again, i, i)
        one = run(c, rowwise, task, cnn, slice(i, i + 1), budget=120, seeds=[7 + i])
        _same(batch, one, i, 0)


class Killed(Exception):  # noqa: N818 - a stand-in for SIGKILL
    """Raised from inside the run loop: nothing is cleaned up."""


def _attempt(
    c: Case, model: TorchClassifier, task: Task, cnn: list[Surrogate], d: Path, kill: int | None
) -> tuple[AttackResult | None, int]:
    journal = Journal(d / "journal.sqlite")
    if kill is None and (d / "ckpt").exists():
        journal.resume_run(1)
    else:
        journal.new_run()
    oracle = Oracle(model, c.view, max_queries=BUDGET, journal=journal)
    steps: list[int] = []

    def on_step(info: Any) -> None:
        steps.append(info.step)
        if info.step == kill:
            raise Killed

    kw: dict[str, Any] = {
        "on_step": on_step,
        "checkpoints": Checkpointer(d / "ckpt", Every(steps=2)),
    }
    attack = c.build()
    # A baseline's state lives inside its library: it is run again, the journal answering.
    again = kill is None and (d / "ckpt").exists() and not registry.get(c.name).baseline
    go = attack.resume if again else attack.run
    try:
        res = go(
            oracle,
            task.x[:2],
            task.target[:2] if c.targeted else None,
            seed=[3, 4],
            start=task.start[:2] if c.start else None,
            surrogates=cnn if c.surrogate else (),
            **kw,
        )
        return res, len(steps)
    except Killed:
        return None, len(steps)
    finally:
        journal.close()


def _paid(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT seq, digest FROM queries WHERE status = 'paid' ORDER BY seq")
        return [(int(s), str(g)) for s, g in rows]


@pytest.mark.parametrize("name", NAMES)
def test_a_killed_run_resumes_to_the_unbroken_result(
    name: str, digits_torch: TorchClassifier, task: Task, cnn: list[Surrogate], tmp_path: Path
) -> None:
    c = case(name)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (b / "ckpt").mkdir()
    whole, steps = _attempt(c, digits_torch, task, cnn, a, None)
    assert whole is not None
    killed, _ = _attempt(c, digits_torch, task, cnn, b, max(1, steps // 2))
    assert killed is None
    resumed, _ = _attempt(c, digits_torch, task, cnn, b, None)
    assert resumed is not None
    for i in range(2):
        _same(resumed, whole, i, i)
    # Every query was paid once: the resumed run asked again only what the journal lacked.
    assert _paid(b / "journal.sqlite") == _paid(a / "journal.sqlite")
