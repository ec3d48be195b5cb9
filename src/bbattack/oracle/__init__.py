"""The query oracle and what it reveals: views, observations, targets, counters, budgets."""

from .core import KINDS, NO_LIMIT, Oracle, QueryEvent, QueryKind
from .targets import ClassifierTarget, NameIndex, Target, as_target
from .views import (
    Label,
    Labels,
    LabelsObservation,
    Observation,
    Scores,
    ScoresObservation,
    TopK,
    TopKObservation,
    View,
    frozen_array,
    view_from_name,
)

__all__ = [
    "KINDS",
    "NO_LIMIT",
    "ClassifierTarget",
    "Label",
    "Labels",
    "LabelsObservation",
    "NameIndex",
    "Observation",
    "Oracle",
    "QueryEvent",
    "QueryKind",
    "Scores",
    "ScoresObservation",
    "Target",
    "TopK",
    "TopKObservation",
    "View",
    "as_target",
    "frozen_array",
    "view_from_name",
]
