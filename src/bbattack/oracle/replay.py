"""What a replay reads from a run's journal, and checks against it.

* :class:`ReplayTarget`: the stand-in for the run's target: its shape, classes and identity.
  It answers nothing: the journal answers every query of the run, and a query it does not
  hold is an error that names the sequence number and both digests.
* :func:`check_chain`: the hash chain walked from the first row to the last, and each
  example's final (verified) query.
* :func:`disagreement`: how a fresh answer of the target differs from the journal's.

The chain has no key. It shows that no row was edited *without recomputing the chain*, not
what the target answered: whoever holds the file can rewrite a row and every link after it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._journal_db import lost_again
from ._journal_read import open_read_only
from ._rows import Answer, chain_next
from .journal import Journal, JournalError
from .targets import NameIndex
from .views import Observation, View

__all__ = ["ChainCheck", "FinalRow", "ReplayTarget", "check_chain", "disagreement"]

_ZERO = "0" * 64  # the link before a run's first row


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


@dataclass(frozen=True)
class FinalRow:
    """One example's last answered FINAL query: the digest of the image that was verified,
    and the answer the journal holds for it."""

    seq: int
    digest: str
    answer: Answer


@dataclass(frozen=True)
class ChainCheck:
    """A run's rows walked from the first to the last: how many, the last link, the finals."""

    rows: int
    head: str
    finals: dict[int, FinalRow]


def check_chain(path: str, run: int) -> ChainCheck:
    """Walk ``run``'s rows in order: numbered 1, 2, ... without a gap, each link the hash of
    the previous link and the row. JournalError at the first that does not hold."""
    conn = open_read_only(path)
    try:
        cur = conn.execute(
            "SELECT seq, example, kind, digest, labels, scores, status, error, chain "
            "FROM queries WHERE run = ? ORDER BY seq",
            (run,),
        )
        link, n, finals = _ZERO, 0, {}
        for seq, ex, kind, d, lab, sc, status, err, chain in cur:
            n += 1
            if int(seq) != n:
                raise JournalError(f"journal row {n} is missing (the next row is {seq})")
            if status == "sent":
                raise lost_again(n, "sent", err)
            a = None if status in ("lost", "refused") else Answer(lab, sc)
            link = chain_next(link, n, int(ex), str(kind), str(d), str(status), a, err)
            if link != chain:
                raise JournalError(f"journal row {n} was altered: its hash chain does not hold")
            if kind == "final" and a is not None:
                finals[int(ex)] = FinalRow(n, str(d), a)
    except sqlite3.Error as e:
        raise JournalError(f"cannot read the journal {path}: {e}") from None
    finally:
        conn.close()
    return ChainCheck(n, link, finals)


Ranked = list[tuple[int, float | None]]


def _ranked(kind: str, a: Answer) -> Ranked:
    """(label id, score or None), best first; a score vector ranks every class."""
    if kind == "scores":
        p = np.frombuffer(a.scores or b"", "<f4")
        return [(int(c), float(p[c])) for c in np.argsort(-p, kind="stable")]
    labels = np.frombuffer(a.labels or b"", "<i8")
    s = np.frombuffer(a.scores or b"", "<f4")
    if len(s) != len(labels):
        return [(int(c), None) for c in labels]
    return [(int(c), float(v)) for c, v in zip(labels, s, strict=True)]


def disagreement(
    kind: str, said: Answer, now: Answer, tol: float, name: Callable[[int], str]
) -> str | None:
    """How ``now`` (the target, asked again) differs from ``said`` (the journal), or None.
    They agree on the top-1 label (a tie within ``tol`` aside), on the labels shown (one at
    the other answer's top-k cut-off, within ``tol``, aside) and on every score within
    ``tol``. ``kind`` is the view's; ``name`` names a label id."""
    a, b = _ranked(kind, said), _ranked(kind, now)
    if not a or not b:
        return None if a == b else "one of the answers holds no label"
    da, db = dict(a), dict(b)

    def shown(c: int, s: float | None) -> str:
        return name(c) if s is None else f"{name(c)} ({s:.4g})"

    (top_a, sa), (top_b, sb) = a[0], b[0]
    again = db.get(top_a)
    tied = sb is not None and again is not None and again >= sb - tol
    if top_a != top_b and not tied:
        return f"its top-1 is {shown(top_b, sb)}, the journal's {shown(top_a, sa)}"
    if sa is None or sb is None:  # labels alone: the same set
        if set(da) != set(db):
            only = sorted(set(da) ^ set(db))[:5]
            return f"the labels differ ({', '.join(name(c) for c in only)})"
        return None
    worst, gap = -1, tol
    for c in set(da) | set(db):
        x, y = da.get(c), db.get(c)
        if x is not None and y is not None:
            d = abs(x - y)
        elif x is not None:  # shown by the journal alone: fine at the target's cut-off
            d = x - (b[-1][1] or 0.0)
        else:  # shown by the target alone: fine at the journal's cut-off
            d = (y or 0.0) - (a[-1][1] or 0.0)
        if d > gap:
            worst, gap = c, d
    if worst < 0:
        return None
    x, y = da.get(worst), db.get(worst)
    if x is None:
        return f"it shows {shown(worst, y)}, the journal does not"
    if y is None:
        return f"the journal shows {shown(worst, x)}, it does not"
    return f"it scores {name(worst)} {y:.4g}, the journal {x:.4g}"
