"""The score-based attacks (Square, Bandits-TD, SimBA-DCT, Parsimonious) on the small digits
model: success, budgets, query kinds, batches against single runs, seeds, the saved image."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from bbattack import AttackResult, Oracle, Scores, TorchClassifier
from bbattack.attacks import registry
from support import Task

FloatArray = NDArray[np.float32]

# (attack, norm, radius on the digits model, extra config)
CASES: list[tuple[str, str, float, dict[str, Any]]] = [
    ("square", "linf", 0.3, {}),
    ("square", "l2", 3.0, {}),
    # The options that go beyond the paper (measured in BENCHMARKS.md, not defaults).
    ("square", "linf", 0.3, {"reuse": True, "schedule": "adaptive", "stall_steps": 20}),
    ("square", "l2", 3.0, {"reuse": True, "schedule": "adaptive", "stall_steps": 20}),
    ("bandits", "linf", 0.3, {"image_lr": 0.02, "tile_size": 2, "online_lr": 1, "fd_eta": 0.5}),
    # An 8×8 image needs longer probes and a slower prior than the paper's 224×224 settings.
    ("bandits", "l2", 3.0, {"image_lr": 0.2, "online_lr": 1, "fd_eta": 0.5, "tile_size": 2}),
    ("simba", "l2", 3.0, {"step": 0.5, "freq_ratio": 0.5}),
    ("parsimonious", "linf", 0.3, {"block_size": 4, "batch_size": 8}),
    ("ql", "linf", 0.3, {"loss": "margin", "samples": 20}),
]
IDS = [f"{a}-{n}" + ("-options" if e.get("reuse") else "") for a, n, _, e in CASES]


def build(name: str, norm: str, eps: float, extra: dict[str, Any], **kw: Any) -> Any:
    return registry.build(name, norm=norm, eps=eps, **{**extra, **kw})


def distance(norm: str, a: FloatArray, b: FloatArray) -> NDArray[np.float64]:
    d = (a.astype(np.float64) - b.astype(np.float64)).reshape(len(a), -1)
    out: NDArray[np.float64] = (
        np.abs(d).max(axis=1) if norm == "linf" else np.sqrt((d * d).sum(axis=1))
    )
    return out


def check(
    res: AttackResult,
    oracle: Oracle,
    model: TorchClassifier,
    x: FloatArray,
    norm: str,
    eps: float,
    target: NDArray[np.int64] | None,
) -> None:
    """Budget, kinds, the ball, the 8-bit grid, and success as the model itself judges the
    saved image."""
    q = oracle.queries()
    assert [r.queries for r in res.images] == q.tolist()
    for r in res.images:
        assert sum(r.queries_by_kind.values()) == r.queries
        assert oracle.max_queries is None or r.queries <= oracle.max_queries
    assert (distance(norm, res.x_adv, x) <= eps + 1e-5).all()
    scaled = res.x_adv.astype(np.float64) * 255
    assert np.abs(scaled - np.rint(scaled)).max() < 1e-4
    top1 = model(res.x_adv).argmax(axis=1)
    clean = model(x).argmax(axis=1)
    want = top1 != clean if target is None else top1 == target
    assert [r.success for r in res.images] == want.tolist()


@pytest.mark.parametrize(("name", "norm", "eps", "extra"), CASES, ids=IDS)
@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
def test_succeeds_on_the_small_model(
    digits_torch: TorchClassifier,
    task: Task,
    name: str,
    norm: str,
    eps: float,
    extra: dict[str, Any],
    targeted: bool,
) -> None:
    oracle = Oracle(digits_torch, Scores(), max_queries=3_000)
    target = task.target if targeted else None
    res = build(name, norm, eps, extra).run(oracle, task.x, target, seed=0)
    check(res, oracle, digits_torch, task.x, norm, eps, target)
    assert all(r.success for r in res.images)
    assert all(r.stop_reason == "success" for r in res.images)
    for r in res.images:
        # The final verification is the one query after the success.
        assert r.queries_by_kind["final"] == 1
        assert r.queries_at_success == r.queries - 1
        if name in {
            "square",
            "parsimonious",
        }:  # the candidate's own answer showed the goal: no check is paid
            assert r.queries_by_kind["success_check"] == 0


@pytest.mark.parametrize(("name", "norm", "eps", "extra"), CASES, ids=IDS)
def test_batch_equals_single_runs_and_seeds_repeat(
    digits_torch: TorchClassifier,
    task: Task,
    name: str,
    norm: str,
    eps: float,
    extra: dict[str, Any],
) -> None:
    attack = build(name, norm, eps, extra)

    def run(x: FloatArray, t: NDArray[np.int64], seeds: list[int]) -> AttackResult:
        return attack.run(Oracle(digits_torch, max_queries=400), x, t, seed=seeds)  # type: ignore[no-any-return]

    batch = run(task.x, task.target, [5, 6, 7, 8])
    again = run(task.x, task.target, [5, 6, 7, 8])
    np.testing.assert_array_equal(batch.x_adv, again.x_adv)
    for i in range(len(task.x)):
        one = run(task.x[i : i + 1], task.target[i : i + 1], [5 + i])
        np.testing.assert_array_equal(one.x_adv[0], batch.x_adv[i])
        a, b = one.images[0], batch.images[i]
        assert (a.queries, a.queries_at_success, a.queries_by_kind, a.steps) == (
            b.queries,
            b.queries_at_success,
            b.queries_by_kind,
            b.steps,
        )
    other = run(task.x, task.target, [105, 106, 107, 108])
    assert not np.array_equal(other.x_adv, batch.x_adv)


@pytest.mark.parametrize(("name", "norm", "eps", "extra"), CASES, ids=IDS)
@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    budget=st.integers(3, 60),
    total=st.one_of(st.none(), st.integers(6, 200)),
    seed=st.integers(0, 2**31),
    targeted=st.booleans(),
)
def test_budget_is_never_exceeded(
    digits_torch: TorchClassifier,
    task: Task,
    name: str,
    norm: str,
    eps: float,
    extra: dict[str, Any],
    budget: int,
    total: int | None,
    seed: int,
    targeted: bool,
) -> None:
    # A small radius: most runs end on the budget, not in success.
    oracle = Oracle(digits_torch, Scores(), max_queries=budget, max_total_queries=total)
    x = task.x[:2]
    target = task.target[:2] if targeted else None
    res = build(name, norm, eps / 10, extra).run(oracle, x, target, seed=seed)
    check(res, oracle, digits_torch, x, norm, eps / 10, target)
    assert total is None or oracle.total_queries <= total
    for r in res.images:
        assert r.queries_by_kind["final"] == 1
        assert r.stop_reason in {"success", "budget"}


def test_square_paper_preset_and_overrides() -> None:
    paper = build("square", "linf", 0.05, {"preset": "paper"})
    assert paper.config.targeted_loss == "ce"
    mixed = build("square", "linf", 0.05, {"preset": "paper", "targeted_loss": "margin"})
    assert mixed.config.targeted_loss == "margin"
    both = np.array([True, False])  # a targeted and an untargeted image
    np.testing.assert_allclose(paper.config.initial_p(both), [0.05, 0.05])
    np.testing.assert_allclose(build("square", "l2", 5.0, {}).config.initial_p(both), [0.1, 0.1])
    np.testing.assert_allclose(
        build("square", "linf", 0.05, {}).config.initial_p(both), [0.03, 0.05]
    )
    mine = build("square", "linf", 0.05, {"p_init": 0.2, "p_init_untargeted": 0.3})
    np.testing.assert_allclose(mine.config.initial_p(both), [0.2, 0.3])
    assert build("square", "linf", 0.05, {}).config.targeted_loss == "ce"
    assert (paper.config.min_schedule, build("square", "linf", 0.05, {}).config.min_schedule) == (
        1,
        10_000,
    )


def test_a_short_budget_keeps_the_paper_windows_of_a_10k_run(
    digits_torch: TorchClassifier, task: Task
) -> None:
    """Below 10k queries the default does not compress the p schedule (the paper's preset
    does): a 60-query run makes the proposals of a 10k run, cut short."""

    def run(**kw: Any) -> AttackResult:
        oracle = Oracle(digits_torch, Scores(), max_queries=60)
        return build("square", "linf", 0.05, kw).run(oracle, task.x, task.target, seed=3)  # type: ignore[no-any-return]

    # A first window of half the 8×8 image, so that the schedule's halvings change its side.
    short = run(p_init=0.5)
    np.testing.assert_array_equal(short.x_adv, run(p_init=0.5, schedule_queries=10_000).x_adv)
    assert not np.array_equal(short.x_adv, run(preset="paper", p_init=0.5).x_adv)
