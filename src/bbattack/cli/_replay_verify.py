"""``bbattack replay --verify``: ask the run's own target the final query again (one query,
paid where the target bills) and compare its answer with the journal's final answer.

This is the one check a replay can make of what the target said: the journal's chain has no
key, so a journal edited and re-chained, with result.json rewritten to match, replays as
consistently as an honest one. The target knows better. Only the final answer is checked:
the others stay the journal's word.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import typer
from numpy.typing import NDArray

from ..errors import TargetUnavailable, UserInputError
from ..models import Backend, load_model
from ..oracle import Oracle, QueryKind, Target, View, as_target
from ..oracle._rows import split
from ..oracle.journal import target_identity
from ..oracle.replay import FinalRow, disagreement
from ..remote.spend import usd
from ._common import print_error
from ._remote import EXIT_REMOTE, RemoteOptions, open_checked
from ._rundir import RunRecord

__all__ = ["SCORE_TOLERANCE", "Verified", "verify_final"]

SCORE_TOLERANCE = 1e-3  # another backend or machine moves a probability far less than this


@dataclass(frozen=True)
class Verified:
    """What --verify found: the target agrees with the journal's final answer."""

    target: str
    queries: int
    cost: str  # "" for a free (local) target
    top1: str

    def line(self) -> str:
        paid = f", {self.cost}" if self.cost else ""
        return (
            f"verified: {self.target} answered the final query again as the journal says "
            f"(top-1 {self.top1}); {self.queries} query sent{paid}, not written to the "
            "journal. The journal's other answers are still its word alone."
        )


def verify_final(
    rec: RunRecord,
    view: View,
    final: FinalRow,
    x: NDArray[np.float32],
    vocabulary: list[str] | None,
    api_key: str | None,
    tolerance: float,
) -> Verified:
    """Ask the run's target for ``x`` (the image of ``final``) under the run's view, once;
    UserInputError (one line) where its answer differs from the journal's beyond
    ``tolerance``, or where the target here is not the run's."""
    target, close, price = _open_target(rec, vocabulary, api_key)
    try:
        ident = target_identity(target)
        if ident != rec.target.get("identity"):
            raise UserInputError(
                f"--verify: the target here is {ident}; the run was made against "
                f"{rec.target.get('identity')}: nothing was sent"
            )
        oracle = Oracle(target, view, max_queries=1)
        obs = oracle.query(x[None], oracle.register(1), QueryKind.FINAL)
        sent = oracle.total_queries
    except TargetUnavailable as e:
        if isinstance(e, UserInputError):
            raise
        print_error(f"--verify: the target did not answer: {e}")
        raise typer.Exit(EXIT_REMOTE) from None
    finally:
        close()
    names = target.class_names

    def name(c: int) -> str:
        return names.name(c) if names is not None else str(c)

    now = split(obs)[0]
    why = disagreement(view.kind, final.answer, now, tolerance, name)
    if why is not None:
        raise UserInputError(
            f"--verify: the target does not answer the final query ({final.seq}) as the "
            f"journal says: {why} (tolerance {tolerance:g}); the journal was edited and its "
            "chain recomputed, or the target changed"
        )
    top = int(obs.top1()[0])
    cost = "" if price is None else f"{usd(sent * price / 1000.0)} at ${price:.2f}/1000"
    return Verified(target.name, sent, cost, name(top))


def _open_target(
    rec: RunRecord, vocabulary: list[str] | None, api_key: str | None
) -> tuple[Target, Callable[[], None], float | None]:
    """The run's target as run.json names it (a built-in model, or the label API with the
    run's request options), a closer, and the price per 1,000 queries (None: free)."""
    cfg = rec.config
    r = cfg.get("remote")
    if r is None:
        backend = rec.target.get("backend")
        chosen = cast(Backend, backend if backend in ("onnx", "torch") else "auto")
        model = load_model(str(cfg["model"]), backend=chosen)
        return as_target(model), lambda: None, None
    from ..targets import LabelTarget, Vocabulary
    from ..targets.every_class import EveryClassTarget

    opts = RemoteOptions.from_config(r, api_key)
    client = open_checked(opts, 1, "--verify: {e}; nothing was sent")
    # The journal's vocabulary: the fresh answer's label ids are the journal's.
    names = Vocabulary(vocabulary)
    target = (
        EveryClassTarget(client, opts.max_results, names, name=opts.endpoint)
        if opts.every_class
        else LabelTarget(client, names, name=opts.endpoint)
    )
    return target, client.close, opts.price
