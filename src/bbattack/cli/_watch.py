"""What the command line watches while an attack runs, beside the attack: the clean class's
score on each checked iterate (an untargeted run has no target to show), and the retries of a
remote target. The attack sees none of it: this wraps the command's own target, outside the
oracle, and reads observations the oracle has already counted."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from ..errors import TargetUnavailable
from ..models import Classifier
from ..oracle import (
    LabelsObservation,
    NameIndex,
    Observation,
    QueryEvent,
    QueryKind,
    Target,
    View,
    as_target,
)
from ..oracle.journal import target_identity

__all__ = ["OriginalCurve", "RetryNotes", "Watched"]


@dataclass
class OriginalCurve:
    """The clean class's score (or rank) after each success check: (queries, score, rank)."""

    points: list[tuple[int, float | None, int | None]] = field(default_factory=list)
    original: int | None = None

    @property
    def last(self) -> tuple[int, float | None, int | None] | None:
        return self.points[-1] if self.points else None


class Watched:
    """A target wrapper whose oracle hook (which knows the query kind) reads the clean class's
    score off the success checks; it also keeps the message of a TargetUnavailable on its way
    to the attack."""

    def __init__(self, target: Classifier | Target) -> None:
        self._inner = as_target(target)
        self.input_shape = self._inner.input_shape
        self.num_classes = self._inner.num_classes
        self.name = self._inner.name
        self.backend = self._inner.backend
        self.curve = OriginalCurve()
        self.failure: str | None = None

    @property
    def class_names(self) -> NameIndex | None:
        return self._inner.class_names

    def refuses(self, view: View) -> str | None:
        return self._inner.refuses(view)

    def query_limit(self) -> int | None:
        return self._inner.query_limit()

    @property
    def eight_bit(self) -> bool:
        return bool(getattr(self._inner, "eight_bit", False))

    @property
    def billed(self) -> bool:
        return bool(getattr(self._inner, "billed", False))

    def identity(self) -> str:
        return target_identity(self._inner)

    def observe(self, x: NDArray[np.float32], view: View) -> Observation:
        try:
            return self._inner.observe(x, view)
        except TargetUnavailable as e:
            self.failure = str(e)
            raise

    def hook(self, event: QueryEvent) -> None:
        """An oracle hook: after the clean query, learn the clean class; after a success check
        of image 0, note its score and rank (from what the attack was shown: a query answered
        from the journal never reaches the target)."""
        obs = event.observation
        if obs is None or not len(obs):
            return
        if event.kind is QueryKind.INIT and self.curve.original is None:
            self.curve.original = int(obs.top1()[0])
        elif event.kind is QueryKind.SUCCESS_CHECK and self.curve.original is not None:
            c = np.array([self.curve.original])
            rank = int(obs.rank_of(c)[0])
            score: float | None = None
            if not isinstance(obs, LabelsObservation):
                s = float(obs.score_of(c)[0])
                score = s if np.isfinite(s) else None
            self.curve.points.append((event.total, score, rank if rank >= 0 else None))


class RetryNotes:
    """Retries of a remote target, told from its worker threads: the count and the last one."""

    def __init__(self) -> None:
        self.count = 0
        self.last = ""
        self._lock = threading.Lock()
        self.listeners: list[Callable[[str], None]] = []

    def __call__(self, message: str) -> None:
        with self._lock:
            self.count += 1
            self.last = message
        for fn in list(self.listeners):
            fn(message)

    def status(self) -> str:
        with self._lock:
            return f"{self.count} retries" if self.count else ""
