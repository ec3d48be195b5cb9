"""Decision-based attacks (RayS) on the small digits model, through label-only views: success,
budgets, query kinds, batches against single runs, the saved image, the registry's defaults."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from bbattack import AttackResult, Label, Labels, Oracle, TopK, TorchClassifier, View
from bbattack.attacks.label.rays import RaySAttack
from bbattack.errors import UserInputError
from support import Task

FloatArray = NDArray[np.float32]


def check(
    res: AttackResult, oracle: Oracle, model: TorchClassifier, x: FloatArray, eps: float
) -> None:
    """Budget, kinds, the ball, the 8-bit grid, and success as the model itself judges it."""
    assert [r.queries for r in res.images] == oracle.queries().tolist()
    for r in res.images:
        assert sum(r.queries_by_kind.values()) == r.queries
        assert oracle.max_queries is None or r.queries <= oracle.max_queries
        assert r.queries_by_kind["init"] == 1
        assert r.queries_by_kind["gradient"] == r.queries_by_kind["noise"] == 0
    d = np.abs(res.x_adv.astype(np.float64) - x).reshape(len(x), -1).max(axis=1)
    scaled = res.x_adv.astype(np.float64) * 255
    assert np.abs(scaled - np.rint(scaled)).max() < 1e-4
    flipped = model(res.x_adv).argmax(axis=1) != model(x).argmax(axis=1)
    inside = d <= eps + 1e-6
    assert [r.success for r in res.images] == (flipped & inside).tolist()


@pytest.mark.parametrize("view", [Label(), Labels(3), TopK(2)], ids=repr)
def test_rays_flips_every_digit_through_any_view(
    digits_torch: TorchClassifier, task: Task, view: View
) -> None:
    oracle = Oracle(digits_torch, view, max_queries=500)
    res = RaySAttack(eps=0.2).run(oracle, task.x, None)
    check(res, oracle, digits_torch, task.x, 0.2)
    assert all(r.success and r.stop_reason == "success" for r in res.images)
    for r in res.images:
        assert r.queries_at_success == r.queries - 1  # the final check is the one query after
        assert r.queries_by_kind["final"] == 1
        # The first ray is checked once; every later query is a ray check or a search probe.
        assert r.queries_by_kind["probe"] >= 1
        assert r.queries_by_kind["binary_search"] >= 1
        assert r.queries == 2 + r.queries_by_kind["probe"] + r.queries_by_kind["binary_search"]


def test_rays_shrinks_the_radius_it_reports(digits_torch: TorchClassifier, task: Task) -> None:
    """A radius too small to reach still leaves the best adversarial ray's image, saved as it
    is (outside the ball: a failure), and a trace whose radius never grows."""
    oracle = Oracle(digits_torch, Label(), max_queries=150)
    res = RaySAttack(eps=0.01).run(oracle, task.x, None)
    check(res, oracle, digits_torch, task.x, 0.01)
    assert not any(r.success for r in res.images)
    assert all(r.stop_reason == "budget" for r in res.images)
    for i, r in enumerate(res.images):
        eps = [s.eps for s in res.trace if s.image == i]
        assert eps == sorted(eps, reverse=True)
        assert eps[-1] < 1.0  # an adversarial ray was found and searched
        assert r.linf == pytest.approx(eps[-1], abs=1e-6)
        assert digits_torch(res.x_adv[i : i + 1]).argmax() != task.label[i]


def test_a_batch_equals_single_runs(digits_torch: TorchClassifier, task: Task) -> None:
    def run(x: FloatArray) -> AttackResult:
        return RaySAttack(eps=0.1).run(Oracle(digits_torch, Label(), max_queries=300), x, None)

    batch = run(task.x)
    np.testing.assert_array_equal(batch.x_adv, run(task.x).x_adv)
    for i in range(len(task.x)):
        one = run(task.x[i : i + 1])
        np.testing.assert_array_equal(one.x_adv[0], batch.x_adv[i])
        a, b = one.images[0], batch.images[i]
        assert (a.queries, a.queries_at_success, a.queries_by_kind, a.steps) == (
            b.queries,
            b.queries_at_success,
            b.queries_by_kind,
            b.steps,
        )


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    budget=st.integers(2, 80),
    total=st.one_of(st.none(), st.integers(8, 200)),
    eps=st.sampled_from([0.02, 0.1, 0.3]),
    tol=st.integers(1, 8),
)
def test_budget_is_never_exceeded(
    digits_torch: TorchClassifier,
    task: Task,
    budget: int,
    total: int | None,
    eps: float,
    tol: int,
) -> None:
    oracle = Oracle(digits_torch, Label(), max_queries=budget, max_total_queries=total)
    x = task.x[:3]
    if total is not None and total < 2 * len(x):
        return  # too small for the clean and final queries: refused before any query
    res = RaySAttack(eps=eps, tol=tol).run(oracle, x, None)
    check(res, oracle, digits_torch, x, eps)
    assert total is None or oracle.total_queries <= total
    for r in res.images:
        assert r.queries_by_kind["final"] == 1
        assert r.stop_reason in {"success", "budget"}


def test_rays_is_untargeted_only(digits_torch: TorchClassifier, task: Task) -> None:
    with pytest.raises(UserInputError, match="untargeted"):
        RaySAttack().run(Oracle(digits_torch, Label()), task.x, task.target)


def test_a_radius_the_first_ray_reaches_costs_a_few_queries(
    digits_torch: TorchClassifier, task: Task
) -> None:
    """At ε = 1 the first ray (every pixel pushed to +1) ends at the all-white image, inside
    the ball: where the model puts that image in another class than the digit (every digit
    here, as the model trains on this machine), it is the success: the clean query, that
    check, the final check. Where it does not (weights trained on another CPU may differ),
    the run still succeeds inside its budget."""
    oracle = Oracle(digits_torch, Label(), max_queries=100)
    res = RaySAttack(eps=1.0).run(oracle, task.x, None)
    check(res, oracle, digits_torch, task.x, 1.0)
    white = int(digits_torch(np.ones((1, *task.x.shape[1:]), np.float32)).argmax())
    clean = digits_torch(task.x).argmax(axis=1)
    for r, c in zip(res.images, clean, strict=True):
        assert r.success
        assert r.queries <= 100
        if white != c:  # the first ray flips it
            assert r.queries_by_kind["probe"] == 1
            assert r.queries_by_kind["binary_search"] == 0
            assert r.queries == 3
