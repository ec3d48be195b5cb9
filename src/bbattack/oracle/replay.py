"""The stand-in for a run's target in a replay: its shape, classes and identity, read from the
journal. It answers nothing: the journal answers every query of the run, and a query it does
not hold is an error that names the sequence number and both digests."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from .journal import Journal, JournalError
from .targets import NameIndex
from .views import Observation, View

__all__ = ["ReplayTarget"]


class ReplayTarget:
    """A target for ``Oracle(ReplayTarget(journal, run), view, journal=journal)`` after
    ``journal.replay_run(run)``."""

    def __init__(self, journal: Journal, run: int) -> None:
        info = journal.run_info(run)
        identity, _ = journal.run_target(run)
        if identity is None or not info:
            raise JournalError(f"{journal.path}: run {run} never queried its target")
        self._identity = identity
        c, h, w = (int(v) for v in info["input_shape"])
        self.input_shape = (c, h, w)
        self.num_classes = int(info["num_classes"])
        self.name = str(info["name"])
        self.backend = str(info["backend"])
        self.eight_bit = bool(info.get("eight_bit", False))
        self._limit = info.get("query_limit")
        self._names: Any = None
        if info.get("vocabulary"):
            from ..targets import Vocabulary

            self._names = Vocabulary()  # the journal fills it in when the oracle attaches
        elif info.get("names") is not None:
            from ..classes import ClassNames

            self._names = ClassNames.from_names(list(info["names"]))

    @property
    def class_names(self) -> NameIndex | None:
        names: NameIndex | None = self._names
        return names

    def identity(self) -> str:
        return self._identity

    def refuses(self, view: View) -> str | None:
        return None

    def query_limit(self) -> int | None:
        return None if self._limit is None else int(self._limit)

    def observe(self, x: NDArray[np.float32], view: View) -> Observation:
        raise JournalError("a replay never asks the target")
