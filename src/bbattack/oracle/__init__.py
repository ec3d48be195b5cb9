"""The query oracle and what it reveals: views, observations, targets, counters, budgets, and
the query journal behind it."""

from .core import KINDS, NO_LIMIT, Oracle, QueryEvent, QueryKind
from .journal import Journal, JournalError
from .targets import ClassifierTarget, NameIndex, Target, as_target, target_identity
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
    "Journal",
    "JournalError",
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
    "target_identity",
    "view_from_name",
]
