"""Label-string targets: a Cloud-Vision-like source that returns a varying number of free-text
labels, behind the oracle, attacked by PI and LO with a target label string."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from bbattack import (
    Labels,
    LabelsObservation,
    Oracle,
    QueryKind,
    Scores,
    TopK,
    TopKObservation,
    TorchClassifier,
    UserInputError,
    ViewRefused,
)
from bbattack.attacks import registry
from bbattack.attacks.goals import Within
from bbattack.attacks.label.partial import LOAttack, LOConfig, PIAttack
from bbattack.targets import LabelTarget, Vocabulary
from support import Task

FloatArray = NDArray[np.float32]
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


class DigitLabeler:
    """Labels a digit like a label API: fine names plus a coarse "Even"/"Odd" label, only those
    scoring at least ``threshold``, best first, so the number of labels varies per image."""

    input_shape = (1, 8, 8)

    def __init__(self, model: TorchClassifier, threshold: float = 0.05) -> None:
        self.model = model
        self.threshold = threshold
        self.calls = 0

    def annotate(self, x: FloatArray) -> list[list[tuple[str, float]]]:
        self.calls += 1
        p = self.model(x)
        out = []
        for row in p:
            cands = [(DIGITS[i].title(), float(row[i])) for i in range(10)]
            cands += [("Even", float(row[0::2].sum())), ("Odd", float(row[1::2].sum()))]
            kept = sorted((c for c in cands if c[1] >= self.threshold), key=lambda c: -c[1])
            out.append(kept)
        return out


def test_vocabulary_is_case_insensitive_and_refuses_ids() -> None:
    v = Vocabulary(["Dog"])
    assert v.resolve("dog") == v.resolve("  DOG ") == 0
    assert v.resolve("Tabby cat") == 1
    assert v.name(1) == "Tabby cat"
    with pytest.raises(UserInputError, match="label string"):
        v.resolve(3)


def test_observations_are_padded_where_fewer_labels_came_back(
    digits_torch: TorchClassifier, task: Task
) -> None:
    target = LabelTarget(DigitLabeler(digits_torch, threshold=0.02))
    oracle = Oracle(target, TopK(None))
    ids = oracle.register(len(task.x))
    obs = oracle.query(np.concatenate([task.x, task.start]), np.tile(ids, 2), QueryKind.INIT)
    assert isinstance(obs, TopKObservation)
    counts = (obs.labels >= 0).sum(axis=1)
    assert counts.min() >= 1
    assert counts.max() == obs.labels.shape[1]
    assert np.isnan(obs.scores[obs.labels < 0]).all()  # padding carries no score
    names = target.class_names
    assert {names.name(int(i)) for i in obs.labels[obs.labels >= 0]} <= {
        *(d.title() for d in DIGITS),
        "Even",
        "Odd",
    }
    assert oracle.queries(ids).tolist() == [2] * len(ids)
    only_labels = Oracle(target, Labels(2))
    lids = only_labels.register(1)
    lobs = only_labels.query(task.x[:1], lids, QueryKind.INIT)
    assert isinstance(lobs, LabelsObservation)
    assert lobs.labels.shape == (1, 2)
    assert not hasattr(lobs, "scores")


def test_label_targets_refuse_a_score_vector_before_any_query(
    digits_torch: TorchClassifier,
) -> None:
    labeler = DigitLabeler(digits_torch)
    # Refused when the oracle is built: nothing is asked of the source, nothing is paid.
    with pytest.raises(ViewRefused, match="not a score vector"):
        Oracle(LabelTarget(labeler), Scores(), max_queries=100)
    assert labeler.calls == 0


def parity(digit: int) -> str:
    return "Even" if digit % 2 == 0 else "Odd"


@pytest.mark.parametrize("success", ["top1", "topk"])
def test_pi_reaches_a_target_label_string(
    digits_torch: TorchClassifier, task: Task, success: Within
) -> None:
    # The coarse parity label outranks every digit name (it sums five of them), as "Dog"
    # outranks a breed on Cloud Vision: top-1 success targets it, top-k success the digit name.
    goal = int(task.target[0])
    label = parity(goal) if success == "top1" else DIGITS[goal]
    target = LabelTarget(DigitLabeler(digits_torch))
    oracle = Oracle(target, TopK(None), max_queries=20_000)
    tid = target.class_names.resolve(label)
    attack = PIAttack(eps=0.3, samples=20)
    result = attack.run(oracle, task.x[:1], tid, start=task.start[:1], seed=0, success=success)
    (r,) = result.images
    assert r.success
    assert r.queries <= 20_000
    assert r.target is not None
    assert r.target.name == label
    assert r.linf <= 0.3 + 1e-6
    shown = [(e.name or "").lower() for e in r.final_topk]
    if success == "top1":
        assert shown[0] == label.lower()
    else:
        assert label in shown


def test_lo_reaches_a_target_label_string(digits_torch: TorchClassifier, task: Task) -> None:
    target = LabelTarget(DigitLabeler(digits_torch))
    oracle = Oracle(target, Labels(2), max_queries=30_000)
    tid = target.class_names.resolve(parity(int(task.target[0])))
    attack = LOAttack(LOConfig(eps=0.3, samples=10, noise_samples=5, mu=0.01))
    result = attack.run(oracle, task.x[:1], tid, start=task.start[:1], seed=0)
    (r,) = result.images
    assert r.success
    assert all(e.score is None for e in r.final_topk)
    assert sum(r.queries_by_kind.values()) == r.queries <= 30_000


@pytest.mark.parametrize(
    ("name", "view", "config"),
    [
        ("pi-square", TopK(None), {}),
        ("hsj", Labels(2), {}),
        ("sign-opt", Labels(2), {"probes": 50}),
    ],
)
def test_the_newer_pi_and_lo_attacks_reach_a_target_label_string(
    digits_torch: TorchClassifier, task: Task, name: str, view: Any, config: dict[str, Any]
) -> None:
    """The label API returns 1 to 12 labels an image; each attack reads only what came back."""
    target = LabelTarget(DigitLabeler(digits_torch))
    oracle = Oracle(target, view, max_queries=5_000)
    tid = target.class_names.resolve(DIGITS[int(task.target[0])])
    attack = registry.build(name, eps=0.3, **config)
    result = attack.run(oracle, task.x[:1], tid, start=task.start[:1], seed=0, success="topk")
    (r,) = result.images
    assert r.success
    assert r.linf <= 0.3 + 1e-6
    assert sum(r.queries_by_kind.values()) == r.queries == oracle.total_queries <= 5_000
    assert DIGITS[int(task.target[0])] in [(e.name or "").lower() for e in r.final_topk]


def test_rays_flips_a_label_string_untargeted(digits_torch: TorchClassifier, task: Task) -> None:
    target = LabelTarget(DigitLabeler(digits_torch))
    oracle = Oracle(target, Labels(1), max_queries=2_000)
    result = registry.build("rays", eps=0.3).run(oracle, task.x[:2], seed=0)
    assert all(r.success for r in result.images)
    assert all(r.final_topk[0].score is None for r in result.images)
