"""The attack framework: registry, balls, goals, the private target, the finish path, and the
regressions the framework review found."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbattack import (
    CallableClassifier,
    Label,
    Labels,
    Oracle,
    QueryKind,
    Scores,
    TopK,
    TorchClassifier,
    UserInputError,
    ViewRefused,
)
from bbattack.attacks import AttackState, L2Ball, LinfBall, make_ball, registry
from bbattack.attacks.checkpoint import Checkpointer, CheckpointError
from bbattack.attacks.finish import Ending, finish
from bbattack.attacks.goals import Goal
from bbattack.attacks.label.partial import PIAttack, PIConfig
from bbattack.attacks.request import RunRequest
from bbattack.attacks.score.ql import QLAttack
from bbattack.oracle import LabelsObservation, TopKObservation
from bbattack.results import AttackResult
from bbattack.targets import LabelTarget
from support import DIGITS_SHAPE, FloatArray, Task


def pi() -> PIAttack:
    return PIAttack(PIConfig(eps=0.3, samples=20))


# ---------------------------------------------------------------- registry


def test_the_registry_lists_ours_and_the_baselines_with_what_they_declare() -> None:
    table = registry.all_attacks()
    assert {"ql", "pi", "lo", "ta-square", "art-square", "art-hsj"} <= set(table)
    for name, info in table.items():
        assert info.name == name == info.cls.name
        assert info.paper.arxiv
        assert info.paper.venue
        assert info.paper.title
        assert set(info.views) <= {"scores", "topk", "labels"}
        assert set(info.norms) <= {"linf", "l2"}
        assert info.budget > 0
        assert info.cls.__doc__
        assert "Query cost" in info.cls.__doc__
    assert not table["ql"].baseline
    assert table["ta-square"].baseline
    targeted = [registry.default_attack(t).name for t in ("ql", "pi", "lo")]
    assert targeted == ["square", "pi-square", "lo"]
    # Untargeted (the paper's PI and LO are targeted): Square on the shown score under PI,
    # RayS on labels.
    untargeted = [registry.default_attack(t, untargeted=True).name for t in ("ql", "pi", "lo")]
    assert untargeted == ["square", "square-topk", "rays"]
    assert table["art-hsj"].needs_start
    assert not table["ta-square"].needs_start


def test_the_default_surrogate_attack_fits_the_norm_whatever_the_import_order() -> None:
    # CI imported gfcs (L2) before transfer and --surrogate alone picked gfcs for an L∞ ball.
    code = (
        "import bbattack.attacks.transfer.gfcs\n"
        "from bbattack.attacks import registry\n"
        "print(list(registry.all_attacks()))\n"
        "print(registry.default_attack('ql', surrogate=True, norm='linf').name,"
        " registry.default_attack('ql', surrogate=True, norm='l2').name)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    order, defaults = out.stdout.splitlines()
    assert order.index("'transfer'") < order.index("'gfcs'")
    assert defaults == "transfer transfer"


def test_an_attack_refuses_a_view_it_cannot_run_under_before_any_query(
    digits_torch: TorchClassifier, task: Task
) -> None:
    oracle = Oracle(digits_torch, Labels(1), max_queries=100)
    with pytest.raises(ViewRefused, match=r"needs scores .*--threat ql"):
        QLAttack().run(oracle, task.x, task.target)
    assert oracle.total_queries == 0


def test_an_attack_refuses_a_norm_it_does_not_support(
    digits_torch: TorchClassifier, task: Task
) -> None:
    oracle = Oracle(digits_torch, Scores(), max_queries=100)
    with pytest.raises(ViewRefused, match="supports the norms linf, not l2"):
        QLAttack(norm="l2", eps=2.0).run(oracle, task.x, task.target)
    assert oracle.total_queries == 0


def test_an_linf_radius_above_one_is_refused_but_an_l2_one_is_not() -> None:
    with pytest.raises(ValueError, match="L∞"):
        QLAttack(eps=2.0)
    assert QLAttack(norm="l2", eps=2.0).config.ball() == L2Ball(2.0)


# ---------------------------------------------------------------- balls


_radius = st.floats(0.004, 0.5)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), eps=_radius, norm=st.sampled_from(["linf", "l2"]))
def test_quantising_stays_on_the_grid_and_inside_the_ball(seed: int, eps: float, norm: str) -> None:
    rng = np.random.default_rng(seed)
    ball = make_ball(norm, eps * (8.0 if norm == "l2" else 1.0))
    x0 = (rng.integers(0, 256, (3, *DIGITS_SHAPE)) / 255.0).astype(np.float32)
    x = np.clip(x0 + rng.normal(0, 0.3, x0.shape), 0, 1).astype(np.float32)
    inside = ball.project(x, x0)
    assert ball.contains(inside, x0).all()
    np.testing.assert_allclose(ball.project(inside, x0), inside, atol=1e-6)  # idempotent
    q = ball.quantize_inside(inside, x0)
    assert ball.contains(q, x0).all()
    np.testing.assert_allclose(q * 255.0, np.rint(q * 255.0), atol=1e-3)
    assert ((q >= 0) & (q <= 1)).all()


def test_l2_distance_and_linf_distance_are_the_norms() -> None:
    x0 = np.zeros((1, 1, 2, 2), np.float32)
    x = np.array([[[[0.3, 0.4], [0.0, 0.0]]]], np.float32)
    assert L2Ball(1.0).distance(x, x0)[0] == pytest.approx(0.5)
    assert LinfBall(1.0).distance(x, x0)[0] == pytest.approx(0.4)


# ---------------------------------------------------------------- goals


def test_one_goal_decides_targeted_topk_and_untargeted_rows() -> None:
    obs = TopKObservation(np.array([[3, 5], [3, 5], [2, 1]]), np.full((3, 2), 0.4, np.float32))
    target = np.array([3, 5, -1])
    orig = np.array([1, 1, 2])
    assert Goal("top1").hit(obs, target, orig).tolist() == [True, False, False]
    assert Goal("topk").hit(obs, target, orig).tolist() == [True, True, False]
    moved = LabelsObservation(np.array([[4]]))
    assert Goal().hit(moved, np.array([-1]), np.array([2])).tolist() == [True]


# ---------------------------------------------------------------- the oracle owns the target


def test_an_attack_cannot_read_more_than_its_view_reveals(digits_torch: TorchClassifier) -> None:
    oracle = Oracle(digits_torch, Label(), max_queries=10)
    assert not hasattr(oracle, "model")
    public = {n: getattr(oracle, n) for n in dir(oracle) if not n.startswith("_")}
    for name, value in public.items():
        assert value is not digits_torch, name
        assert not hasattr(value, "_model"), name
    ids = oracle.register(1)
    obs = oracle.query(np.zeros((1, *DIGITS_SHAPE), np.float32), ids, QueryKind.INIT)
    assert isinstance(obs, LabelsObservation)
    assert obs.labels.shape == (1, 1)
    assert not hasattr(obs, "scores")
    assert not hasattr(obs, "probs")


def test_a_query_is_charged_before_it_is_sent_and_a_lost_answer_stays_spent() -> None:
    def broken(x: FloatArray) -> FloatArray:
        raise ConnectionError("the answer was lost")

    model = CallableClassifier(broken, DIGITS_SHAPE, 10, output="probs")
    oracle = Oracle(model, Scores(), max_queries=10)
    ids = oracle.register(2)
    with pytest.raises(ConnectionError):
        oracle.query(np.zeros((2, *DIGITS_SHAPE), np.float32), ids, QueryKind.INIT)
    assert oracle.queries(ids).tolist() == [1, 1]
    assert [oracle.lost_queries(int(i)) for i in ids] == [1, 1]


def test_affordable_does_not_charge_the_rows_it_refused(digits_torch: TorchClassifier) -> None:
    oracle = Oracle(digits_torch, Scores(), max_total_queries=10)
    ids = oracle.register(2)
    assert oracle.affordable(ids, np.array([11, 1])).tolist() == [False, True]
    assert oracle.affordable(ids, np.array([4, 7, 6])[:2]).tolist() == [True, False]


class _CappedSource:
    """A label source with a spend cap, like the HTTP client's ``--max-cost``."""

    input_shape = DIGITS_SHAPE

    def __init__(self, model: TorchClassifier, cap: int) -> None:
        self.model = model
        self.cap = cap
        self.paid = 0

    @property
    def remaining_queries(self) -> int:
        return self.cap - self.paid

    def annotate(self, x: FloatArray) -> list[list[tuple[str, float]]]:
        assert len(x) <= self.remaining_queries, "the cap was crossed"
        self.paid += len(x)
        p = self.model(x)
        return [[(f"digit {int(i)}", float(r[i])) for i in np.argsort(-r)[:3]] for r in p]


def test_a_target_spend_cap_is_a_budget_the_attack_plans_with(
    digits_torch: TorchClassifier, task: Task
) -> None:
    source = _CappedSource(digits_torch, cap=60)
    target = LabelTarget(source)
    oracle = Oracle(target, TopK(3), max_queries=10_000)
    assert oracle.total_remaining() == 60
    tid = target.class_names.resolve(f"digit {int(task.target[0])}")
    result = pi().run(oracle, task.x[:1], tid, start=task.start[:1], seed=0)
    (r,) = result.images
    assert source.paid <= 60
    assert r.queries == oracle.total_queries <= 60
    assert r.stop_reason in ("budget", "success")
    assert r.queries_by_kind["final"] == 1  # the cap kept the final verification back


# ---------------------------------------------------------------- finish and stop reasons


def test_the_final_check_that_cannot_be_paid_is_reported_as_such(
    digits_torch: TorchClassifier, task: Task
) -> None:
    oracle = Oracle(digits_torch, Scores(), max_queries=1)
    ids = oracle.register(1)
    oracle.query(task.x[:1], ids, QueryKind.INIT)
    end = Ending(
        ids=ids,
        x0=task.x[:1],
        x=task.x[:1],
        radius=np.array([0.1]),
        target=np.array([int(task.label[0])]),
        orig=np.array([int(task.label[0])]),
        claimed=np.array([True]),
        queries_at_success=np.array([1]),
        steps=np.array([0]),
        stop_reason=np.array(["success"], dtype=object),
        wall_time_s=np.array([0.0]),
        seeds=np.array([0]),
    )
    _, (r,) = finish(oracle, Goal(), LinfBall(0.1), end)
    assert not r.success
    assert r.stop_reason == "no_final_query"
    assert r.final_topk == []


def test_pi_start_check_and_final_query_fit_the_budget(
    digits_torch: TorchClassifier, task: Task
) -> None:
    # Regression: max_queries=2 with a start image spent both (clean, start check) and ended
    # with success False and an empty final_topk. Now it is refused before any query.
    oracle = Oracle(digits_torch, TopK(1), max_queries=2)
    with pytest.raises(UserInputError, match="at least 3 queries"):
        pi().run(oracle, task.x[:1], task.target[:1], start=task.start[:1])
    assert oracle.total_queries == 0
    oracle = Oracle(digits_torch, TopK(1), max_queries=3)
    (r,) = pi().run(oracle, task.x[:1], task.target[:1], start=task.start[:1]).images
    assert r.queries_by_kind == {**r.queries_by_kind, "init": 2, "final": 1}
    assert len(r.final_topk) == 1
    assert r.stop_reason == "budget"


def test_an_image_already_in_the_target_class_is_verified_not_lost(
    digits_torch: TorchClassifier, task: Task
) -> None:
    # Regression: with a total of 4, image 0's start check took image 1's final query, and
    # image 1 (already the target) was reported as lost_in_quantisation.
    x = task.x[:2]
    target = np.array([int(task.target[0]), int(task.label[1])])
    oracle = Oracle(digits_torch, TopK(1), max_total_queries=4)
    with pytest.raises(UserInputError, match="3 queries per image"):
        pi().run(oracle, x, target, start=task.start[:2])
    assert oracle.total_queries == 0
    oracle = Oracle(digits_torch, TopK(1), max_total_queries=6)
    r0, r1 = pi().run(oracle, x, target, start=task.start[:2]).images
    # Verified (not lost), and no attack's success: it was already the target.
    assert not r1.success
    assert r1.stop_reason == "already"
    assert r1.queries_by_kind["final"] == 1
    assert r1.queries == 2
    assert r0.stop_reason == "budget"
    assert r0.queries_by_kind["final"] == 1


class _Idle(QLAttack):
    """A broken step: spends nothing and stops nothing."""

    def step(self, oracle: Oracle, state: AttackState) -> None:
        return None


def test_a_step_that_spends_nothing_stops_the_image_as_stalled(
    digits_torch: TorchClassifier, task: Task
) -> None:
    oracle = Oracle(digits_torch, Scores(), max_queries=100)
    result = _Idle().run(oracle, task.x, task.target)
    assert [r.stop_reason for r in result.images] == ["stalled"] * len(task.x)
    assert all(r.steps == 0 and r.queries == 2 for r in result.images)


def test_results_name_the_norm_and_the_lost_queries(
    digits_torch: TorchClassifier, task: Task
) -> None:
    oracle = Oracle(digits_torch, Scores(), max_queries=30)
    (r,) = QLAttack(eps=0.1, samples=10).run(oracle, task.x[:1], task.target[:1]).images
    assert r.norm == "linf"
    assert r.eps == 0.1
    assert r.lost_queries == 0


# ---------------------------------------------------------------- one request object


def test_a_run_request_gives_what_run_gives_and_a_baseline_refuses_to_resume(
    digits_torch: TorchClassifier, task: Task, tmp_path: Path
) -> None:
    def run(request: RunRequest | None) -> AttackResult:
        oracle = Oracle(digits_torch, Scores(), max_queries=200)
        attack = QLAttack(eps=0.1, samples=10)
        if request is None:
            return attack.run(oracle, task.x[:2], task.target[:2], seed=[4, 9])
        return attack.execute(oracle, request)

    by_run = run(None)
    by_request = run(RunRequest(task.x[:2], task.target[:2], seed=[4, 9]))
    np.testing.assert_array_equal(by_request.x_adv, by_run.x_adv)
    assert [r.queries for r in by_request.images] == [r.queries for r in by_run.images]
    baseline = registry.build("ta-square", eps=0.1)
    oracle = Oracle(digits_torch, Scores(), max_queries=50)
    ck = Checkpointer(tmp_path)
    resume = RunRequest(task.x[:1], task.target[:1], checkpoints=ck, resume=True)
    with pytest.raises(CheckpointError, match="cannot be resumed"):
        baseline.execute(oracle, resume)
    assert oracle.total_queries == 0
