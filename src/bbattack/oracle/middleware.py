"""Middleware: what stands between the oracle and the journal, such as a defence in front of
the target (a query detector, a noise layer).

The oracle holds a stack, like a transport under a policy::

    attack -> Oracle (counts, budgets) -> middleware[0] -> ... -> middleware[-1]
           -> Journal (answers what it holds, records what is paid) -> target

A middleware sees every query, repeats included: above the journal, a resumed run's queries
that the journal answers from its records still pass through it, so its state advances as in
the run that paid them. Its state is plain data (:meth:`Middleware.snapshot`), saved with the
oracle's counters in every checkpoint and given back on resume (:meth:`Middleware.restore`).
A middleware decides what the layer below is asked (``forward``) and what the attack is told:
it may change the answer, answer without asking (the query is still charged), or raise
(a refusal the target's schema would send: a subclass of TargetUnavailable or OracleError).
A layer that refuses a batch calls :meth:`Query.refused`: the journal then records the batch
as asked and refused (one row per image, status ``refused``, with the error), nothing reaches
the target, and a resumed or replayed run meets the same rows on its tape (a resume keeps
them: a run goes on past a refusal and resumes from a checkpoint taken after it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
from numpy.typing import NDArray

from .views import Observation, View

__all__ = ["Forward", "Middleware", "Query", "Refuse"]

Forward = Callable[[NDArray[np.float32]], Observation]
# Records a refused batch below the stack (the journal), then raises the refusal.
Refuse = Callable[[NDArray[np.float32], BaseException], NoReturn]


@dataclass(frozen=True)
class Query:
    """One batch as a middleware sees it: the images, their example ids, the kind of query
    (``init``, ``transfer``, ...), the view it is asked under and the caller's key (the API
    key; ``local`` for a local target), which stateful defences track per account."""

    x: NDArray[np.float32]
    ids: NDArray[np.int64]
    kind: str
    view: View
    key: str = "local"
    refuse: Refuse | None = field(default=None, compare=False, repr=False)

    def refused(self, x: NDArray[np.float32], error: BaseException) -> NoReturn:
        """Refuse the batch ``x`` (as this layer would have sent it on) with ``error``: the
        journal records it as asked and refused, and ``error`` is raised; outside an oracle
        (no journal), ``error`` is just raised."""
        if self.refuse is not None:
            self.refuse(x, error)
        raise error


class Middleware(ABC):
    """One layer of the stack. Subclasses implement :meth:`handle`; a layer with state
    overrides :meth:`snapshot` and :meth:`restore` (plain data only: numbers, strings, lists,
    dicts and numpy arrays, as in a checkpoint)."""

    name: str = "middleware"

    @abstractmethod
    def handle(self, query: Query, forward: Forward) -> Observation:
        """Answer ``query``: usually ``forward(query.x)`` (the layers below), maybe changed."""

    def describe(self) -> dict[str, Any]:
        """What results and provenance record of this layer (its name and parameters)."""
        return {"name": self.name}

    def snapshot(self) -> dict[str, Any]:
        """This layer's state as plain data (what a checkpoint holds)."""
        return {}

    def restore(self, snap: dict[str, Any]) -> None:
        """Take back the state of :meth:`snapshot` (a resumed run)."""
        if snap:
            raise ValueError(f"{self.name} keeps no state, but the checkpoint holds some")
