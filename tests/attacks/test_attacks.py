"""QL, PI and LO on the small digits model: success, budgets, the ε box, the 8-bit grid."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from pydantic import BaseModel, ValidationError

from bbattack import (
    AttackResult,
    ImageResult,
    Label,
    Labels,
    Oracle,
    Scores,
    StartImageError,
    StepInfo,
    ThreatModelError,
    TopK,
    TorchClassifier,
    UserInputError,
    View,
)
from bbattack.attacks import Attack
from bbattack.attacks.label.partial import LOAttack, LOConfig, PIAttack, PIConfig
from bbattack.attacks.score.ql import QLAttack, QLConfig
from support import Task

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]

TRACE_KEYS = {"image", "step", "queries", "loss", "target_prob", "target_rank", "eps", "lr"}
KIND_KEYS = {
    "init",
    "gradient",
    "line_search",
    "success_check",
    "noise",
    "probe",
    "binary_search",
    "transfer",
    "final",
}


def ql(**kw: Any) -> QLAttack:
    return QLAttack(QLConfig(eps=0.3, samples=20, **kw))


def pi(**kw: Any) -> PIAttack:
    return PIAttack(PIConfig(eps=0.3, samples=20, **kw))


def lo(**kw: Any) -> LOAttack:
    return LOAttack(LOConfig(eps=0.3, samples=10, noise_samples=5, mu=0.01, **kw))


def check_result(
    result: AttackResult,
    oracle: Oracle,
    model: TorchClassifier,
    x: FloatArray,
    eps: float,
    target: IntArray | None,
    box: float | None = None,
) -> None:
    """Invariants every run must keep, whether or not it succeeded.

    Successful images lie within ``eps`` of the source; others within ``box`` (default ``eps``;
    PI/LO report their current iterate, which may still be outside ε when they run out).
    """
    n = len(x)
    assert len(result.images) == n
    assert result.x_adv.shape == x.shape
    assert result.x_adv.dtype == np.float32
    # Queries: within budget, split exactly by kind, and what the oracle charged.
    per_image = [r.queries for r in result.images]
    assert per_image == oracle.queries().tolist()
    for r in result.images:
        assert set(r.queries_by_kind) == KIND_KEYS
        assert sum(r.queries_by_kind.values()) == r.queries
        if oracle.max_queries is not None:
            assert r.queries <= oracle.max_queries
        if r.queries_at_success is not None:
            assert r.queries_at_success <= r.queries
    if oracle.max_total_queries is not None:
        assert oracle.total_queries <= oracle.max_total_queries
    # The ε box and the 8-bit grid.
    delta = np.abs(result.x_adv.astype(np.float64) - x.astype(np.float64)).reshape(n, -1)
    success = np.array([r.success for r in result.images])
    assert (delta.max(axis=1)[success] <= eps + 1e-6).all()
    assert (delta.max(axis=1) <= (eps if box is None else box) + 1e-6).all()
    scaled = result.x_adv.astype(np.float64) * 255.0
    assert np.abs(scaled - np.rint(scaled)).max() < 1e-4
    assert result.x_adv.min() >= 0.0
    assert result.x_adv.max() <= 1.0
    for i, r in enumerate(result.images):
        assert r.index == i
        assert r.eps == eps
        assert r.linf == pytest.approx(delta[i].max(), abs=1e-7)
        assert r.l2 == pytest.approx(float(np.sqrt((delta[i] ** 2).sum())), rel=1e-6)
    # Success is what the model itself says about the saved image, inside the ε box.
    top1 = model(result.x_adv).argmax(axis=1)
    clean = model(x).argmax(axis=1)
    for i, r in enumerate(result.images):
        assert r.original is not None
        assert r.original.id == clean[i]
        inside = bool(delta[i].max() <= eps + 1e-6)
        # A goal that held without a perturbation is no attack's success ("already").
        made = r.stop_reason != "already"
        if target is None:
            assert r.target is None
            assert r.success == (inside and made and bool(top1[i] != clean[i]))
        else:
            assert r.target is not None
            assert r.target.id == target[i]
            assert r.success == (inside and made and bool(top1[i] == target[i]))
        if r.final_topk:
            assert r.final_topk[0].id == top1[i]
        assert r.success == (r.queries_at_success is not None)


# ---------------------------------------------------------------- success


def test_ql_untargeted_succeeds(digits_torch: TorchClassifier, task: Task) -> None:
    oracle = Oracle(digits_torch, Scores(), max_queries=3_000)
    result = ql().run(oracle, task.x, seed=0)
    check_result(result, oracle, digits_torch, task.x, 0.3, None)
    assert all(r.success for r in result.images)
    assert result.success_rate == 1.0
    assert all(r.stop_reason == "success" for r in result.images)
    assert all(r.seed == i for i, r in enumerate(result.images))


def test_ql_targeted_succeeds(digits_torch: TorchClassifier, task: Task) -> None:
    oracle = Oracle(digits_torch, Scores(), max_queries=3_000)
    result = ql().run(oracle, task.x, target=task.target, seed=10)
    check_result(result, oracle, digits_torch, task.x, 0.3, task.target)
    assert all(r.success for r in result.images)
    assert [r.seed for r in result.images] == [10, 11, 12, 13]
    for r in result.images:
        # Targeted QL spends: 1 clean query, `samples` per step, 1 check per step, 1 final.
        k = r.queries_by_kind
        assert k["init"] == 1
        assert k["final"] == 1
        assert k["gradient"] == 20 * r.steps
        assert k["success_check"] == r.steps
        assert k["line_search"] == k["noise"] == 0


@pytest.mark.parametrize("k", [1, 3])
def test_pi_targeted_succeeds_from_a_start_image(
    digits_torch: TorchClassifier, task: Task, k: int
) -> None:
    oracle = Oracle(digits_torch, TopK(k), max_queries=20_000)
    result = pi().run(oracle, task.x, target=task.target, start=task.start, seed=0)
    check_result(result, oracle, digits_torch, task.x, 0.3, task.target)
    assert all(r.success for r in result.images)
    for r in result.images:
        assert r.queries_by_kind["init"] == 2  # the clean image and the start-image check
        assert r.queries_by_kind["gradient"] == 20 * r.steps
        assert r.queries_by_kind["line_search"] >= r.steps
        assert len(r.final_topk) == k
        assert all(e.score is not None for e in r.final_topk)


@pytest.mark.parametrize("view", [Labels(1), Label()], ids=repr)
def test_lo_targeted_succeeds_from_a_start_image(
    digits_torch: TorchClassifier, task: Task, view: View
) -> None:
    oracle = Oracle(digits_torch, view, max_queries=30_000)
    result = lo().run(oracle, task.x, target=task.target, start=task.start, seed=0)
    check_result(result, oracle, digits_torch, task.x, 0.3, task.target)
    assert all(r.success for r in result.images)
    for r in result.images:
        assert r.queries_by_kind["noise"] == 10 * 5 * r.steps
        assert r.queries_by_kind["gradient"] == 0
        # Label-only: the result reveals no scores either.
        assert all(e.score is None for e in r.final_topk)
    assert all(t.target_prob is None for t in result.trace)


def test_a_single_chw_image_is_accepted(digits_torch: TorchClassifier, task: Task) -> None:
    oracle = Oracle(digits_torch, Scores(), max_queries=3_000)
    result = ql().run(oracle, task.x[0], target=int(task.target[0]), seed=0)
    assert result.x_adv.shape == (1, *task.x.shape[1:])
    assert result.images[0].success


def test_an_image_already_in_the_target_class_costs_two_queries(
    digits_torch: TorchClassifier, task: Task
) -> None:
    oracle = Oracle(digits_torch, Scores(), max_queries=100)
    result = ql().run(oracle, task.x[:2], target=task.label[:2], seed=0)
    check_result(result, oracle, digits_torch, task.x[:2], 0.3, task.label[:2])
    for r in result.images:
        assert not r.success  # no attack's success: each was its target already
        assert r.stop_reason == "already"
        assert r.queries == 2
        assert r.queries_at_success is None
        assert r.steps == 0
    assert np.array_equal(result.x_adv, task.x[:2])
    assert result.trace == []


# ---------------------------------------------------------------- results and traces


def test_trace_rows_have_the_documented_keys(digits_torch: TorchClassifier, task: Task) -> None:
    oracle = Oracle(digits_torch, Scores(), max_queries=3_000)
    result = ql().run(oracle, task.x, target=task.target, seed=0)
    assert result.trace
    for row in result.trace:
        assert set(row.to_dict()) == TRACE_KEYS
    for line in result.trace_jsonl().splitlines():
        assert set(json.loads(line)) == TRACE_KEYS
    for i, r in enumerate(result.images):
        rows = [t for t in result.trace if t.image == i]
        assert [t.step for t in rows] == list(range(1, r.steps + 1))
        queries = [t.queries for t in rows]
        assert queries == sorted(queries)
        assert queries[-1] <= r.queries
        assert all(t.target_prob is not None and 0.0 <= t.target_prob <= 1.0 for t in rows)
        assert len(result.trace_jsonl(i).splitlines()) == r.steps


def test_on_step_is_called_after_every_step(digits_torch: TorchClassifier, task: Task) -> None:
    infos: list[StepInfo] = []
    oracle = Oracle(digits_torch, Scores(), max_queries=3_000)
    result = ql().run(oracle, task.x, target=task.target, seed=0, on_step=infos.append)
    assert [i.step for i in infos] == list(range(1, max(r.steps for r in result.images) + 1))
    assert all(i.total == 4 for i in infos)
    assert infos[-1].active == 0
    assert infos[-1].succeeded == 4
    assert infos[-1].queries.tolist() == [r.queries - 1 for r in result.images]  # before FINAL


def test_results_survive_json(digits_torch: TorchClassifier, task: Task) -> None:
    oracle = Oracle(digits_torch, TopK(1), max_queries=20_000)
    result = pi().run(oracle, task.x[:2], target=task.target[:2], start=task.start[:2], seed=0)
    doc = json.loads(json.dumps(result.to_json()))
    assert doc["attack"] == "pi"
    assert doc["threat"] == {"view": "topk", "k": 1}
    assert doc["config"]["eps"] == 0.3
    assert doc["success_rate"] == result.success_rate
    for raw, r in zip(doc["images"], result.images, strict=True):
        assert ImageResult.model_validate(raw) == r
    merged = result.image_json(1)
    assert merged["index"] == 1
    assert merged["config"] == doc["config"]


def test_max_steps_stops_the_run(digits_torch: TorchClassifier, task: Task) -> None:
    oracle = Oracle(digits_torch, Scores(), max_queries=3_000)
    # ε = 0.01 is far too small to succeed: every image runs until the step cap.
    result = QLAttack(eps=0.01, samples=20, max_steps=2).run(
        oracle, task.x, target=task.target, seed=0
    )
    check_result(result, oracle, digits_torch, task.x, 0.01, task.target)
    for r in result.images:
        assert r.steps == 2
        assert r.stop_reason == "max_steps"
        assert r.queries == 1 + 2 * 21 + 1


# ---------------------------------------------------------------- budgets


@pytest.mark.parametrize("budget", [2, 3, 21, 22, 23, 45, 60, 130])
def test_budget_starved_ql_stops_on_budget(
    digits_torch: TorchClassifier, task: Task, budget: int
) -> None:
    oracle = Oracle(digits_torch, Scores(), max_queries=budget)
    result = QLAttack(eps=0.01, samples=20).run(oracle, task.x, target=task.target, seed=0)
    check_result(result, oracle, digits_torch, task.x, 0.01, task.target)
    for r in result.images:
        assert not r.success
        assert r.stop_reason == "budget"
        assert r.queries <= budget
        # Steps are only taken when they fit, with one query kept back for the final check.
        steps = (budget - 2) // 21
        assert r.queries_by_kind["gradient"] == 20 * steps
        assert r.queries_by_kind["success_check"] == steps
        assert r.queries == 2 + 21 * steps
        assert r.queries_by_kind["final"] == 1


def test_steps_count_only_iterations_that_ran(digits_torch: TorchClassifier, task: Task) -> None:
    # Room for the clean query, one step (20 NES samples + 1 check) and the final check.
    oracle = Oracle(digits_torch, Scores(), max_queries=23)
    result = QLAttack(eps=0.01, samples=20).run(oracle, task.x[:1], target=task.target[:1])
    r = result.images[0]
    assert r.queries_by_kind["gradient"] == 20
    assert r.steps == 1
    assert len(result.trace) == 1


@pytest.mark.parametrize("budget", [3, 10, 40, 64])
def test_budget_starved_pi_and_lo_never_exceed(
    digits_torch: TorchClassifier, task: Task, budget: int
) -> None:
    runs: list[tuple[PIAttack | LOAttack, View]] = [(pi(), TopK(1)), (lo(), Labels(1))]
    for attack, view in runs:
        oracle = Oracle(digits_torch, view, max_queries=budget)
        result = attack.run(oracle, task.x, target=task.target, start=task.start, seed=0)
        check_result(result, oracle, digits_torch, task.x, 0.3, task.target, box=1.0)
        for r in result.images:
            assert not r.success
            assert r.stop_reason == "budget"
            assert r.queries <= budget


def test_a_shared_total_budget_is_never_exceeded(digits_torch: TorchClassifier, task: Task) -> None:
    oracle = Oracle(digits_torch, Scores(), max_total_queries=150)
    result = QLAttack(eps=0.01, samples=20).run(oracle, task.x, target=task.target, seed=0)
    check_result(result, oracle, digits_torch, task.x, 0.01, task.target)
    assert oracle.total_queries <= 150
    assert all(r.stop_reason == "budget" for r in result.images)


def test_a_shared_total_budget_keeps_the_final_check_of_finished_images(
    digits_torch: TorchClassifier, task: Task
) -> None:
    # Image 1 is already in its target class (success at the clean query); image 0 runs on.
    target = np.array([task.target[0], task.label[1]])
    oracle = Oracle(digits_torch, Scores(), max_total_queries=150)
    result = QLAttack(eps=0.01, samples=20).run(oracle, task.x[:2], target=target, seed=0)
    assert oracle.total_queries <= 150
    assert not result.images[1].success  # verified, and the target already
    assert result.images[1].stop_reason == "already"


def test_a_total_budget_too_small_for_the_batch_is_a_user_error(
    digits_torch: TorchClassifier, task: Task
) -> None:
    oracle = Oracle(digits_torch, Scores(), max_total_queries=3)
    with pytest.raises(UserInputError):
        ql().run(oracle, task.x, seed=0)


@pytest.mark.parametrize("attack", [ql(), pi(), lo()], ids=lambda a: a.name)
def test_a_budget_below_two_queries_is_a_user_error(
    digits_torch: TorchClassifier, task: Task, attack: Attack[Any]
) -> None:
    oracle = Oracle(digits_torch, Labels(1) if attack.name == "lo" else Scores(), max_queries=1)
    with pytest.raises(UserInputError, match="budget"):
        attack.run(oracle, task.x, target=task.target, start=task.start)
    assert oracle.total_queries == 0


# ---------------------------------------------------------------- threat models and inputs


@pytest.mark.parametrize("view", [TopK(1), TopK(5), Labels(1), Label()], ids=repr)
def test_ql_refuses_views_without_full_scores(
    digits_torch: TorchClassifier, task: Task, view: View
) -> None:
    oracle = Oracle(digits_torch, view)
    with pytest.raises(ThreatModelError):
        ql().run(oracle, task.x, target=task.target)
    assert oracle.total_queries == 0


@pytest.mark.parametrize("view", [Labels(1), Labels(3), Label()], ids=repr)
def test_pi_refuses_label_only_views(digits_torch: TorchClassifier, task: Task, view: View) -> None:
    oracle = Oracle(digits_torch, view)
    with pytest.raises(ThreatModelError):
        pi().run(oracle, task.x, target=task.target, start=task.start)
    assert oracle.total_queries == 0


@pytest.mark.parametrize(("attack", "view"), [(pi(), TopK(1)), (lo(), Labels(1))])
def test_pi_and_lo_need_a_target(
    digits_torch: TorchClassifier, task: Task, attack: Attack[Any], view: View
) -> None:
    oracle = Oracle(digits_torch, view)
    with pytest.raises(UserInputError, match="target"):
        attack.run(oracle, task.x, start=task.start)
    assert oracle.total_queries == 0


@pytest.mark.parametrize(("attack", "view"), [(pi(), TopK(1)), (lo(), Labels(1))])
def test_a_start_image_outside_the_target_class_is_refused(
    digits_torch: TorchClassifier, task: Task, attack: Attack[Any], view: View
) -> None:
    oracle = Oracle(digits_torch, view, max_queries=1_000)
    # The source images themselves are not in the target class.
    with pytest.raises(StartImageError, match="start image"):
        attack.run(oracle, task.x, target=task.target, start=task.x)


def test_the_start_image_search_on_a_grayscale_model_gives_a_start_image_error(
    digits_torch: TorchClassifier, task: Task
) -> None:
    oracle = Oracle(digits_torch, TopK(1), max_queries=1_000)
    with pytest.raises(StartImageError):
        pi().run(oracle, task.x, target=task.target)


def test_bad_run_arguments_raise_user_input_error(
    digits_torch: TorchClassifier, task: Task
) -> None:
    oracle = Oracle(digits_torch, Scores())
    with pytest.raises(UserInputError, match="out of range"):
        ql().run(oracle, task.x, target=10)
    with pytest.raises(UserInputError, match="out of range"):
        ql().run(oracle, task.x, target=[1, 2, -3, 4])
    with pytest.raises(UserInputError, match="shape"):
        ql().run(oracle, np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(UserInputError, match="seed"):
        ql().run(oracle, task.x, seed=[1, 2])
    with pytest.raises(UserInputError, match="seed"):
        ql().run(oracle, task.x, seed=-2)
    assert oracle.total_queries == 0


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize(
    ("config", "kwargs"),
    [
        (QLConfig, {"samples": 21}),
        (QLConfig, {"samples": 0}),
        (QLConfig, {"eps": 0.0}),
        (QLConfig, {"eps": -0.1}),
        (QLConfig, {"eps": 1.5}),
        (QLConfig, {"min_lr": 0.1, "max_lr": 0.01}),
        (QLConfig, {"momentum": 1.0}),
        (QLConfig, {"sigma": 0.0}),
        (QLConfig, {"max_steps": 0}),
        (QLConfig, {"not_a_field": 1}),
        (PIConfig, {"samples": 7}),
        (PIConfig, {"eps": 0.0}),
        (PIConfig, {"eps": 1.01}),
        (PIConfig, {"starting_eps": 0.0}),
        (LOConfig, {"samples": 3}),
        (LOConfig, {"eps": 0.0}),
        (LOConfig, {"eps": 2.0}),
        (LOConfig, {"noise_samples": 0}),
        (LOConfig, {"mu": 0.0}),
    ],
)
def test_invalid_configs_raise_validation_error(
    config: type[BaseModel], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError):
        config(**kwargs)


@pytest.mark.parametrize("attack", [QLAttack, PIAttack, LOAttack])
@pytest.mark.parametrize("kwargs", [{"samples": 5}, {"eps": 0.0}, {"eps": 1.5}])
def test_invalid_keyword_overrides_raise_validation_error(
    attack: type[Attack[Any]], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError):
        attack(**kwargs)


def test_unknown_keyword_overrides_raise_validation_error() -> None:
    with pytest.raises(ValidationError):
        QLAttack(sample=20)


def test_keyword_overrides_apply_on_top_of_a_config() -> None:
    attack = PIAttack(PIConfig(eps=0.1, samples=10), samples=30)
    assert attack.config == PIConfig(eps=0.1, samples=30)
    assert QLAttack(eps=1.0).config.eps == 1.0
    assert QLAttack().config == QLConfig()


def test_configs_are_frozen() -> None:
    cfg = QLConfig()
    with pytest.raises(ValidationError):
        cfg.eps = 0.2  # type: ignore[misc]


def test_an_attack_with_no_budget_and_no_step_cap_is_refused(
    digits_torch: TorchClassifier, task: Task
) -> None:
    with pytest.raises(UserInputError, match="never stop"):
        QLAttack().run(Oracle(digits_torch, Scores()), task.x[0], int(task.target[0]))
    capped = QLAttack(max_steps=2).run(Oracle(digits_torch, Scores()), task.x[0], None, seed=0)
    assert capped.images[0].steps <= 2
