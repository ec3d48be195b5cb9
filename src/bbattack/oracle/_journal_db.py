"""The journal's SQLite side: the schema, transactions, and the small helpers of journal.py.

Tables
------
runs      one row per attack run: the target's identity, the view, what a replay needs to
          stand in for the target (input shape, classes), the caller's note (config hash).
queries   one row per query of a run, in order: ``seq`` (1, 2, ...), the example id, the query
          kind, the digest of the exact input, the observation the view returned (label ids
          and/or scores, as bytes), the time, ``status`` ('paid': the target answered it;
          'journal': answered from an earlier row with the same input, target and view;
          'lost': charged, but the target failed; 'sent': a billed target was asked and no
          answer was recorded yet), the error of a lost query, and ``chain``: a hash over the
          previous row's chain and this row, so an edited row is found.
lost      answers lost in flight (a kill, an interrupt, a failure): moved here from
          ``queries`` when a run is resumed, and asked again.
labels    a label API's vocabulary (label string <-> id), shared by the runs of the file.
sessions  each start or resume of a run, and how many queries it took from the journal by
          sequence number.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from ..errors import TARGET_DOWN_REASONS, TargetUnavailable, UserInputError
from ._rows import Answer

__all__ = ["JOURNAL_FORMAT", "SCHEMA", "JournalError", "JournalStats", "Transaction"]

JOURNAL_FORMAT = 2  # 1 was the HTTP client's content-keyed cache (bbattack.remote.journal)

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    target TEXT,
    view TEXT,
    info TEXT NOT NULL DEFAULT '{}',
    note TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS queries (
    run INTEGER NOT NULL REFERENCES runs(run),
    seq INTEGER NOT NULL,
    example INTEGER NOT NULL,
    kind TEXT NOT NULL,
    digest TEXT NOT NULL,
    labels BLOB,
    scores BLOB,
    time REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('paid', 'journal', 'lost', 'sent')),
    error TEXT,
    chain TEXT NOT NULL,
    PRIMARY KEY (run, seq)
);
CREATE INDEX IF NOT EXISTS queries_digest ON queries(digest);
CREATE TABLE IF NOT EXISTS lost (
    run INTEGER NOT NULL, seq INTEGER NOT NULL, example INTEGER NOT NULL, kind TEXT NOT NULL,
    digest TEXT NOT NULL, time REAL NOT NULL, status TEXT NOT NULL, error TEXT,
    moved REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS labels (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    session INTEGER PRIMARY KEY,
    run INTEGER NOT NULL REFERENCES runs(run),
    mode TEXT NOT NULL,
    started REAL NOT NULL,
    position INTEGER NOT NULL,
    from_journal INTEGER NOT NULL DEFAULT 0
);
"""


class JournalError(UserInputError):
    """The journal cannot answer as asked: a query that differs from the recorded one, a query
    past its end in a replay, an edited row, another target. One line; CLI exit 2."""


@dataclass(frozen=True)
class JournalStats:
    """One run's rows by status ('lost' counts answers lost in flight too), its last seq."""

    paid: int
    journal: int
    lost: int
    last_seq: int

    def as_dict(self) -> dict[str, int]:
        return {"paid": self.paid, "journal": self.journal, "lost": self.lost}


class Transaction:
    """``with Transaction(conn):`` BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def grows(names: Any) -> bool:
    """A vocabulary that gives ids as labels appear (a label API's), not a fixed class list."""
    return bool(getattr(names, "grows", False))


def name_list(names: Any, num_classes: int) -> list[str] | None:
    """A model's class names, for a replay to print the same names; None for a vocabulary
    (stored in ``labels``) or where there are none."""
    if names is None or grows(names) or num_classes > 100_000:
        return None
    return [str(names.name(i)) for i in range(num_classes)]


def describe_error(e: BaseException) -> str:
    """``<stop reason or exception name>: <message>``, one line."""
    reason = getattr(e, "stop_reason", None) if isinstance(e, TargetUnavailable) else None
    text = " ".join(str(e).split())[:300]
    return f"{reason or type(e).__name__}: {text}"


def lost_again(seq: int, status: str, error: str | None) -> BaseException:
    """A lost answer met again in a replay: the same failure where the target said why (the
    run stopped there), else an error: the journal ends there."""
    reason, _, message = (error or "").partition(": ")
    if status == "lost" and reason in TARGET_DOWN_REASONS:
        cls = type("ReplayedUnavailable", (TargetUnavailable,), {"stop_reason": reason})
        err: BaseException = cls(message)
        return err
    what = "was sent and its answer never recorded" if status == "sent" else f"was lost ({error})"
    return JournalError(f"query {seq} {what}; the journal ends there")


def lookup(conn: sqlite3.Connection, run: int, keys: set[str]) -> dict[str, Answer]:
    """Answers to the same inputs (digests) from the same target under the same view as
    ``run``'s, in any run of the file."""
    found: dict[str, Answer] = {}
    ordered = sorted(keys)
    for i in range(0, len(ordered), 500):  # SQLite caps the number of parameters
        chunk = ordered[i : i + 500]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT q.digest, q.labels, q.scores FROM queries q JOIN runs r ON q.run = r.run "
            f"WHERE q.digest IN ({marks}) AND q.status IN ('paid', 'journal') AND r.target = "
            "(SELECT target FROM runs WHERE run = ?) AND r.view = "
            "(SELECT view FROM runs WHERE run = ?) ORDER BY q.run, q.seq",
            (*chunk, run, run),
        )
        for d, lab, sc in rows:
            found.setdefault(str(d), Answer(lab, sc))
    return found
