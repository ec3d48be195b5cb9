"""The one protocol every target speaks: observe images under a view.

A target is what answers queries: a local classifier, a label API, an HTTP client. The oracle
holds it privately, so an attack cannot read more than its view reveals.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from .._classifier import Classifier
from .views import Observation, View

__all__ = ["ClassifierTarget", "NameIndex", "Target", "as_target", "target_identity"]

FloatArray = NDArray[np.float32]


class NameIndex(Protocol):
    """Class names or label strings by id (ClassNames, targets.Vocabulary)."""

    def name(self, class_id: int) -> str: ...

    def resolve(self, key: str | int) -> int: ...


@runtime_checkable
class Target(Protocol):
    """Answers queries with observations; ``refuses`` says up front which views it cannot serve.

    ``query_limit`` is how many more queries the target itself will take (a spend cap, a
    quota), or None for no limit: the oracle plans with it like its own budgets.
    """

    input_shape: tuple[int, int, int]
    num_classes: int
    name: str
    backend: str

    @property
    def class_names(self) -> NameIndex | None: ...

    def refuses(self, view: View) -> str | None: ...

    def query_limit(self) -> int | None: ...

    def observe(self, x: FloatArray, view: View) -> Observation: ...


class ClassifierTarget:
    """A local classifier as a target: the full probabilities, filtered by the view."""

    def __init__(self, model: Classifier) -> None:
        self._model = model
        self.input_shape = model.input_shape
        self.num_classes = model.num_classes
        self.name = model.name
        self.backend = model.backend

    @property
    def class_names(self) -> NameIndex | None:
        return self._model.class_names

    def refuses(self, view: View) -> str | None:
        return None  # a score vector can be cut down to any view

    def query_limit(self) -> int | None:
        return None

    def identity(self) -> str:
        """The model, for the journal and provenance: name, backend, weights hash, classes."""
        weights = self._model.weights_id or getattr(self._model, "digest", None) or "-"
        return f"{self.name}|{self.backend}|{weights}|{self.num_classes}"

    def observe(self, x: FloatArray, view: View) -> Observation:
        if not len(x):
            return view.observe(np.zeros((0, self.num_classes), np.float32))
        return view.observe(self._model(x))


def as_target(target: Classifier | Target) -> Target:
    """Wrap a classifier; pass any other target through."""
    if isinstance(target, Classifier):
        return ClassifierTarget(target)
    return target


def target_identity(target: Target) -> str:
    """What answers the queries, as a string: a target's own ``identity()`` where it has one
    (a model: name, backend, weights hash; an API: endpoint and request options)."""
    fn = getattr(target, "identity", None)
    if callable(fn):
        return str(fn())
    return f"{target.name}|{target.backend}"
