"""Our Sign-OPT on the digits model under the top-1 label view: success from a start image
(targeted) and from noise (untargeted), every query counted by kind, budgets, batches against
single runs, seeds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from bbattack import AttackResult, Label, Oracle, TorchClassifier
from bbattack.attacks import registry
from bbattack.attacks.label.signopt import SignOPTAttack
from bbattack.errors import UserInputError
from support import Task, check_batch_and_seeds

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]
# (norm, eps, targeted, successes of 16 required). Measured: L2 16/16 both ways (median 4
# queries: the start's point at ε already works; the slowest targeted case took 1,475 of the
# 3,000); L∞ untargeted 14/16 on one machine and 15/16 on another (the rest end at the budget
# just outside the ball). The digits model trains to slightly different weights on each CPU,
# so the thresholds leave room: two cases for L2, five for L∞.
CASES = [("l2", 2.0, True, 14), ("l2", 2.0, False, 14), ("linf", 0.3, False, 10)]


def _dist(norm: str, a: FloatArray, b: FloatArray) -> NDArray[np.float64]:
    d = (a.astype(np.float64) - b).reshape(len(a), -1)
    return np.asarray(np.abs(d).max(1) if norm == "linf" else np.sqrt((d * d).sum(1)))


@pytest.mark.parametrize(("norm", "eps", "targeted", "need"), CASES, ids=["l2-t", "l2-u", "linf-u"])
def test_signopt_succeeds_and_saves_the_verified_8_bit_image(
    digits_torch: TorchClassifier,
    cases: tuple[FloatArray, IntArray, FloatArray],
    norm: str,
    eps: float,
    targeted: bool,
    need: int,
) -> None:
    x, target, start = cases
    oracle = Oracle(digits_torch, Label(), max_queries=3_000)
    t, s = (target, start) if targeted else (None, None)
    res = SignOPTAttack(norm=norm, eps=eps).run(oracle, x, t, start=s)
    ok = np.array([r.success for r in res.images])
    assert ok.sum() >= need
    assert [r.queries for r in res.images] == oracle.queries().tolist()
    assert (_dist(norm, res.x_adv[ok], x[ok]) <= eps + 1e-4).all()
    assert np.array_equal(np.rint(res.x_adv * 255) / 255, res.x_adv)
    hit = digits_torch(res.x_adv).argmax(axis=1)
    goal = (hit == target) if targeted else (hit != digits_torch(x).argmax(axis=1))
    assert goal[ok].all()  # a failure saves its nearest adversarial point, outside the ball
    for r in res.images:
        assert r.queries_by_kind["final"] == 1
        assert r.queries <= 3_000
        if r.success:
            assert r.queries_at_success == r.queries - 1


def test_signopt_shrinks_the_boundary_distance_where_the_start_is_far(
    digits_torch: TorchClassifier, cases: tuple[FloatArray, IntArray, FloatArray]
) -> None:
    """Targeted L2 at a radius no start reaches: the gradient steps must bring the boundary
    nearer than the binary search on the start's own ray does."""
    x, target, start = cases
    attack = SignOPTAttack(norm="l2", eps=0.5, probes=50)
    few = attack.run(
        Oracle(digits_torch, Label(), max_queries=40), x[:4], target[:4], start=start[:4]
    )
    many = attack.run(
        Oracle(digits_torch, Label(), max_queries=1_500), x[:4], target[:4], start=start[:4]
    )
    d_few, d_many = _dist("l2", few.x_adv, x[:4]), _dist("l2", many.x_adv, x[:4])
    assert (d_many < d_few).all()
    # The saved images are the targets' side of the boundary, verified by the final query.
    assert all(r.success or r.stop_reason == "budget" for r in many.images)


def test_every_query_is_counted_by_kind(
    digits_torch: TorchClassifier, cases: tuple[FloatArray, IntArray, FloatArray]
) -> None:
    x, target, start = cases
    oracle = Oracle(digits_torch, Label(), max_queries=600)
    res = SignOPTAttack(norm="l2", eps=0.2, probes=50).run(
        oracle, x[:4], target[:4], start=start[:4]
    )
    assert [r.queries for r in res.images] == oracle.queries().tolist()
    for r in res.images:
        k = r.queries_by_kind
        assert sum(k.values()) == r.queries <= 600
        assert k["init"] == 2  # the clean image and the start image's check
        assert k["probe"] >= 50
        assert k["probe"] % 50 == 0
        assert k["line_search"] >= 1
        assert k["binary_search"] > 0
        assert k["success_check"] >= 2  # the start's search and a kept step's


def test_the_paper_defaults_and_the_registry_entry() -> None:
    info = registry.get("sign-opt")
    assert info.needs_start
    assert set(info.norms) == {"l2", "linf"}
    c = SignOPTAttack().config
    assert (c.probes, c.beta, c.step) == (200, 0.001, 0.2)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(budget=st.integers(1, 400), targeted=st.booleans(), norm=st.sampled_from(["linf", "l2"]))
def test_the_budget_is_never_exceeded(
    digits_torch: TorchClassifier, task: Task, budget: int, targeted: bool, norm: str
) -> None:
    oracle = Oracle(digits_torch, Label(), max_queries=budget)
    t, s = (task.target, task.start) if targeted else (None, None)
    attack = SignOPTAttack(norm=norm, eps=0.05 if norm == "linf" else 0.3, probes=30)
    if budget < 3:  # the clean image, a start, the final check
        with pytest.raises(UserInputError):
            attack.run(oracle, task.x, t, start=s)
        assert oracle.total_queries == 0
        return
    res = attack.run(oracle, task.x, t, start=s)
    assert all(r.queries <= budget for r in res.images)
    assert oracle.queries().tolist() == [r.queries for r in res.images]


def test_a_batch_equals_single_runs_and_seeds_repeat(
    digits_torch: TorchClassifier, cases: tuple[FloatArray, IntArray, FloatArray]
) -> None:
    x, target, start = cases
    attack = SignOPTAttack(norm="l2", eps=0.3, probes=20)

    def run(i: slice, seeds: list[int]) -> AttackResult:
        return attack.run(
            Oracle(digits_torch, Label(), max_queries=500), x[i], target[i], seed=seeds,
            start=start[i],
        )  # fmt: skip

    check_batch_and_seeds(run)
