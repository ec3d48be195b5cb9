"""Reproducibility: same seed, same result; a batch equals its single-image runs; the model's
chunk size changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from bbattack import (
    AttackResult,
    Classifier,
    Labels,
    OnnxClassifier,
    Oracle,
    Scores,
    TopK,
    TorchClassifier,
    View,
)
from bbattack.attacks import Attack
from bbattack.attacks.label.partial import LOAttack, PIAttack
from bbattack.attacks.score.ql import QLAttack
from support import Task

Setup = tuple[Attack[Any], View, bool]  # attack, view, targeted


def ql() -> Setup:
    return QLAttack(eps=0.3, samples=20), Scores(), True


def ql_untargeted() -> Setup:
    return QLAttack(eps=0.3, samples=20), Scores(), False


def pi() -> Setup:
    return PIAttack(eps=0.3, samples=20), TopK(1), True


def lo() -> Setup:
    return LOAttack(eps=0.3, samples=10, noise_samples=5, mu=0.01), Labels(1), True


SETUPS = {"ql": ql, "ql-untargeted": ql_untargeted, "pi": pi, "lo": lo}


def run(
    setup: Setup,
    model: Classifier,
    task: Task,
    rows: slice,
    seed: int | list[int],
) -> AttackResult:
    attack, view, targeted = setup
    oracle = Oracle(model, view, max_queries=20_000)
    return attack.run(
        oracle,
        task.x[rows],
        target=task.target[rows] if targeted else None,
        start=task.start[rows] if attack.info.needs_start else None,
        seed=seed,
    )


def assert_same_images(a: AttackResult, i: int, b: AttackResult, j: int) -> None:
    """Image ``i`` of ``a`` and image ``j`` of ``b`` are the same run (up to wall time)."""
    assert np.array_equal(a.x_adv[i], b.x_adv[j])
    assert a.x_adv[i].tobytes() == b.x_adv[j].tobytes()
    ra, rb = a.images[i], b.images[j]
    assert ra.queries == rb.queries
    assert ra.queries_by_kind == rb.queries_by_kind
    assert ra.queries_at_success == rb.queries_at_success
    assert ra.success == rb.success
    assert ra.steps == rb.steps
    assert ra.stop_reason == rb.stop_reason
    assert ra.seed == rb.seed
    assert ra.final_topk == rb.final_topk
    trace_a = [t for t in a.trace if t.image == i]
    trace_b = [t for t in b.trace if t.image == j]
    assert [(t.step, t.queries, t.loss, t.eps) for t in trace_a] == [
        (t.step, t.queries, t.loss, t.eps) for t in trace_b
    ]


@pytest.mark.parametrize("name", list(SETUPS))
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_same_seed_same_result(
    name: str,
    backend: str,
    digits_torch: TorchClassifier,
    digits_onnx: OnnxClassifier,
    task: Task,
) -> None:
    model: Classifier = digits_torch if backend == "torch" else digits_onnx
    a = run(SETUPS[name](), model, task, slice(None), seed=3)
    b = run(SETUPS[name](), model, task, slice(None), seed=3)
    for i in range(len(task.x)):
        assert_same_images(a, i, b, i)
    assert a.trace == b.trace


def test_different_seeds_explore_differently(digits_torch: TorchClassifier, task: Task) -> None:
    a = run(ql(), digits_torch, task, slice(0, 1), seed=0)
    b = run(ql(), digits_torch, task, slice(0, 1), seed=1)
    assert not np.array_equal(a.x_adv, b.x_adv)


@pytest.mark.parametrize("name", list(SETUPS))
def test_a_batch_equals_its_single_image_runs(
    name: str, digits_onnx: OnnxClassifier, task: Task
) -> None:
    seed = 100
    batch = run(SETUPS[name](), digits_onnx, task, slice(None), seed=seed)
    assert [r.seed for r in batch.images] == [seed, seed + 1, seed + 2, seed + 3]
    for i in range(len(task.x)):
        single = run(SETUPS[name](), digits_onnx, task, slice(i, i + 1), seed=seed + i)
        assert_same_images(batch, i, single, 0)


@pytest.mark.parametrize("name", ["ql", "pi"])
def test_an_int_seed_equals_the_explicit_seed_list(
    name: str, digits_onnx: OnnxClassifier, task: Task
) -> None:
    a = run(SETUPS[name](), digits_onnx, task, slice(None), seed=7)
    b = run(SETUPS[name](), digits_onnx, task, slice(None), seed=[7, 8, 9, 10])
    for i in range(len(task.x)):
        assert_same_images(a, i, b, i)


@pytest.mark.parametrize("name", list(SETUPS))
def test_model_chunk_size_does_not_change_the_result(
    name: str, onnx_factory: Callable[[int], OnnxClassifier], task: Task
) -> None:
    small, large = onnx_factory(7), onnx_factory(64)
    assert (small.batch_size, large.batch_size) == (7, 64)
    assert small.path == large.path  # one export, cached by weight hash
    a = run(SETUPS[name](), small, task, slice(None), seed=11)
    b = run(SETUPS[name](), large, task, slice(None), seed=11)
    for i in range(len(task.x)):
        assert_same_images(a, i, b, i)


@pytest.mark.parametrize("name", list(SETUPS))
def test_max_rows_does_not_change_the_result(
    name: str, digits_torch: TorchClassifier, task: Task
) -> None:
    attack, view, targeted = SETUPS[name]()
    # Small enough that every NES batch (and every LO noise batch) is split per image.
    small = type(attack)(attack.config, max_rows=1)
    a = run((attack, view, targeted), digits_torch, task, slice(None), seed=21)
    b = run((small, view, targeted), digits_torch, task, slice(None), seed=21)
    assert small.config.max_rows == 1
    for i in range(len(task.x)):
        assert_same_images(a, i, b, i)
