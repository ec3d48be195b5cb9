"""PI-Square on the small digits model through top-k views: success, budgets, query kinds,
batches against single runs, the saved image, the margin it reads from a partial view."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from bbattack import AttackResult, Labels, Oracle, Scores, TopK, TorchClassifier, View
from bbattack.attacks._losses import visible_margin
from bbattack.attacks.label.pi_square import PISquareAttack
from bbattack.errors import ThreatModelError, UserInputError
from bbattack.oracle import ScoresObservation, TopKObservation
from support import Task, check_batch_and_seeds

FloatArray = NDArray[np.float32]


def check(
    res: AttackResult, oracle: Oracle, model: TorchClassifier, task: Task, eps: float, n: int
) -> None:
    """Budget, kinds, the ball, the 8-bit grid, and success as the model itself judges it."""
    x = task.x[:n]
    assert [r.queries for r in res.images] == oracle.queries().tolist()
    for r in res.images:
        assert sum(r.queries_by_kind.values()) == r.queries
        assert oracle.max_queries is None or r.queries <= oracle.max_queries
        # The clean image, the start image's check, and the start radius's search (at most
        # log2(255) + 1 probes).
        assert 2 <= r.queries_by_kind["init"] <= 2 + 9
    scaled = res.x_adv.astype(np.float64) * 255
    assert np.abs(scaled - np.rint(scaled)).max() < 1e-4
    d = np.abs(res.x_adv.astype(np.float64) - x).reshape(n, -1).max(axis=1)
    hit = model(res.x_adv).argmax(axis=1) == task.target[:n]
    assert [r.success for r in res.images] == (hit & (d <= eps + 1e-6)).tolist()


@pytest.mark.parametrize("view", [TopK(1), TopK(3), Scores()], ids=repr)
def test_pi_square_reaches_the_target_inside_eps(
    digits_torch: TorchClassifier, task: Task, view: View
) -> None:
    oracle = Oracle(digits_torch, view, max_queries=1_500)
    res = PISquareAttack(eps=0.2).run(oracle, task.x, task.target, start=task.start)
    check(res, oracle, digits_torch, task, 0.2, len(task.x))
    assert all(r.success and r.stop_reason == "success" for r in res.images)
    for r in res.images:
        assert r.queries_at_success == r.queries - 1
        assert r.queries_by_kind["final"] == 1
        # The clean image, the start's check and the start radius's binary search: the
        # start costs count as init.
        assert r.queries_by_kind["init"] >= 3
        assert r.queries_by_kind["binary_search"] == 0
        assert r.queries_by_kind["line_search"] >= 1  # shrinks and repairs
        assert r.linf <= 0.2 + 1e-6


def test_the_trace_radius_only_shrinks(digits_torch: TorchClassifier, task: Task) -> None:
    oracle = Oracle(digits_torch, TopK(1), max_queries=400)
    res = PISquareAttack(eps=0.05).run(oracle, task.x, task.target, start=task.start)
    check(res, oracle, digits_torch, task, 0.05, len(task.x))
    for i in range(len(task.x)):
        eps = [s.eps for s in res.trace if s.image == i]
        assert eps == sorted(eps, reverse=True)
        # Every kept iterate showed the target: the saved image is in its class at its radius.
        assert digits_torch(res.x_adv[i : i + 1]).argmax() == task.target[i]
        assert res.images[i].linf == pytest.approx(eps[-1], abs=1e-6)


def test_a_batch_equals_single_runs_and_seeds_matter(
    digits_torch: TorchClassifier, task: Task
) -> None:
    def run(i: slice, seeds: list[int]) -> AttackResult:
        oracle = Oracle(digits_torch, TopK(1), max_queries=300)
        return PISquareAttack(eps=0.15).run(
            oracle, task.x[i], task.target[i], start=task.start[i], seed=seeds
        )

    check_batch_and_seeds(run)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    budget=st.integers(3, 80),
    total=st.one_of(st.none(), st.integers(8, 200)),
    eps=st.sampled_from([0.02, 0.1, 0.3]),
    seed=st.integers(0, 2**31),
)
def test_budget_is_never_exceeded(
    digits_torch: TorchClassifier,
    task: Task,
    budget: int,
    total: int | None,
    eps: float,
    seed: int,
) -> None:
    oracle = Oracle(digits_torch, TopK(1), max_queries=budget, max_total_queries=total)
    if total is not None and total < 3 * 2:
        return
    res = PISquareAttack(eps=eps).run(
        oracle, task.x[:2], task.target[:2], start=task.start[:2], seed=seed
    )
    check(res, oracle, digits_torch, task, eps, 2)
    assert total is None or oracle.total_queries <= total
    for r in res.images:
        assert r.queries_by_kind["final"] == 1
        assert r.stop_reason in {"success", "budget"}


def test_pi_square_needs_a_target_and_scores(digits_torch: TorchClassifier, task: Task) -> None:
    with pytest.raises(UserInputError, match="targeted attack"):
        PISquareAttack().run(Oracle(digits_torch, TopK(1)), task.x, None, start=task.start)
    with pytest.raises(ThreatModelError):
        PISquareAttack().run(Oracle(digits_torch, Labels(1)), task.x, task.target, start=task.start)


def test_the_visible_margin_bounds_the_unseen_classes() -> None:
    t = np.array([3, 3, 3])
    top1 = TopKObservation(
        labels=np.array([[3], [5], [3]]), scores=np.array([[0.9], [0.8], [0.2]], np.float32)
    )
    m = visible_margin(top1, t)
    assert m[0] == pytest.approx(np.log(0.9) - np.log(0.1), rel=1e-5)
    assert m[1] == -np.inf  # the target is not shown
    assert m[2] == pytest.approx(np.log(0.2) - np.log(0.8), rel=1e-5)
    top2 = TopKObservation(labels=np.array([[3, 1]]), scores=np.array([[0.5, 0.3]], np.float32))
    assert visible_margin(top2, t[:1])[0] == pytest.approx(np.log(0.5 / 0.3), rel=1e-5)
    full = ScoresObservation(np.array([[0.1, 0.2, 0.3, 0.4]], np.float32))
    assert visible_margin(full, t[:1])[0] == pytest.approx(np.log(0.4 / 0.3), rel=1e-5)
