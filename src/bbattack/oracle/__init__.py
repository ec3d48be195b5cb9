"""The query oracle and what it reveals: views, observations, targets, counters, budgets, and
the query journal behind it."""

from .core import KINDS, NO_LIMIT, Oracle, QueryEvent, QueryKind
from .journal import Journal, JournalError
from .middleware import Forward, Middleware, Query
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
    "Forward",
    "Journal",
    "JournalError",
    "Label",
    "Labels",
    "LabelsObservation",
    "Middleware",
    "NameIndex",
    "Observation",
    "Oracle",
    "Query",
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
