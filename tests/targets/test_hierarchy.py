"""Labels with a hierarchy: the vocabulary keeps the ancestors an API names (as names, so the
query journal keeps them), the goal lets a label meet a target that is one of its ancestors
when asked to, and a result records which label met it."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray

from api_fakes import AKID, SECRET, RekognitionFake
from bbattack import Oracle
from bbattack.attacks.goals import Goal
from bbattack.attacks.label.partial import PIAttack
from bbattack.oracle import LabelsObservation, TopK, TopKObservation
from bbattack.remote import HttpLabelTarget
from bbattack.targets import LabelTarget, Vocabulary
from bbattack.targets.labels import LabelIndex

FloatArray = NDArray[np.float32]


def test_the_vocabulary_keeps_ancestors_as_names() -> None:
    v = Vocabulary()
    v.add_ancestor("Dog", "Mammal")
    v.add_ancestor("Mammal", "Animal")
    dog, mammal, animal = v.resolve("dog"), v.resolve("Mammal"), v.resolve("ANIMAL")
    assert v.ancestors(dog) == {mammal, animal}  # transitive
    assert v.ancestors(animal) == frozenset()
    labels = np.array([[dog, -1], [animal, dog]])
    assert v.under(labels, np.array([animal, dog])).tolist() == [[True, False], [False, True]]
    # A journal keeps the names in id order: a vocabulary rebuilt from them has the edges.
    again = Vocabulary([v.name(i) for i in range(len(v))])
    assert again.ancestors(again.resolve("Dog")) == {again.resolve("Mammal"), animal}


def test_the_goal_counts_ancestors_only_when_asked() -> None:
    v = Vocabulary(count_ancestors=True)
    v.add_ancestor("Dog", "Animal")
    dog, animal, car = v.resolve("Dog"), v.resolve("Animal"), v.resolve("Car")
    obs = TopKObservation(np.array([[dog, car], [car, dog]]), np.array([[0.9, 0.1], [0.8, 0.2]]))
    target, orig = np.array([animal, animal]), np.array([car, car])
    plain, up = Goal("top1"), Goal.of("top1", v)
    assert plain.hit(obs, target, orig).tolist() == [False, False]
    assert up.hit(obs, target, orig).tolist() == [True, False]
    assert up.match(obs, target).tolist() == [dog, -1]
    assert Goal.of("topk", v).match(obs, target).tolist() == [dog, dog]
    # "Dog" is not met by its ancestor "Animal".
    labels = LabelsObservation(np.array([[animal]]))
    assert up.hit(labels, np.array([dog]), np.array([car])).tolist() == [False]
    assert Goal.of("top1", Vocabulary()).ancestry is None  # off by default


def test_rekognition_parents_reach_the_vocabulary() -> None:
    remote = HttpLabelTarget(
        "https://rekognition.us-east-1.amazonaws.com",
        f"{AKID}:{SECRET}",
        "rekognition",
        transport=httpx.MockTransport(RekognitionFake()),
        input_shape=(3, 8, 8),
    )
    with remote:
        target = LabelTarget(remote, ancestors=True)
        target.observe(np.full((1, 3, 8, 8), 0.5, np.float32), TopK(3))
    v = target.class_names
    assert v.count_ancestors
    assert v.ancestors(v.resolve("Dog")) == {v.resolve("Mammal"), v.resolve("Animal")}


class Colours:
    """A local label source as Rekognition answers: red images are a "Dog" (its parent
    "Animal" listed below it), others a "Car" (a "Vehicle")."""

    input_shape = (3, 8, 8)

    def annotate(self, x: FloatArray) -> list[list[tuple[str, float]]]:
        dog, car = [("Dog", 0.9), ("Animal", 0.5)], [("Car", 0.8), ("Vehicle", 0.4)]
        return [dog if float(img[0].mean()) > float(img[1].mean()) else car for img in x]

    def ancestors(self, label: str) -> tuple[str, ...]:
        return {"Dog": ("Animal",), "Car": ("Vehicle",)}.get(label, ())


@pytest.mark.parametrize("ancestors", [True, False])
def test_a_result_records_the_label_that_met_the_target(ancestors: bool) -> None:
    x = np.zeros((1, 3, 8, 8), np.float32)
    x[0, 1] = 0.6  # green: a Car
    start = np.zeros_like(x)
    start[0, 0] = 0.6  # red: a Dog, inside a ball of radius 1
    target = LabelTarget(Colours(), ancestors=ancestors)
    oracle = Oracle(target, TopK(2), max_queries=30)
    tid = target.class_names.resolve("Animal")
    result = PIAttack(eps=1.0, samples=2).run(oracle, x, tid, start=start, seed=0)
    (r,) = result.images
    assert r.success is ancestors
    assert r.target is not None
    assert r.target.name == "Animal"
    if ancestors:
        assert r.matched is not None
        assert r.matched.name == "Dog"
        assert r.queries < 30  # met early, not by running out of budget
    else:
        assert r.matched is None


def test_api_labels_map_to_imagenet_classes_whatever_the_schema() -> None:
    from bbattack import imagenet_classes

    index = LabelIndex.from_class_names(imagenet_classes())
    tabby = index.classes_of("Tabby cat")
    assert tabby is not None
    assert np.flatnonzero(tabby).tolist() == [281]
    hf = index.classes_of("tabby, tabby cat")  # a Hugging Face ImageNet label
    assert hf is not None
    assert hf.tolist() == tabby.tolist()
    dog = index.classes_of("dog")  # Rekognition, Clarifai: a coarse label
    assert dog is not None
    assert dog.sum() > 100
    assert index.classes_of("Skiing") is None
