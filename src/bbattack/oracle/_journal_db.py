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
          answer was recorded yet; 'refused': a defence in front of the target refused it, an
          answer of its own that a resume keeps and plays back), the error of a lost or refused
          query, and ``chain``: a hash over the previous row's chain and this row, so an edited
          row is found.
lost      answers lost in flight (a kill, an interrupt, a failure): moved here from
          ``queries`` when a run is resumed, and asked again. A row moved as 'sent' was sent to
          a billed target and never answered on record: it stays counted (``lost_billed``).
labels    a label API's vocabulary (label string <-> id), shared by the runs of the file.
sessions  each start or resume of a run, and how many queries it took from the journal by
          sequence number.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from dataclasses import dataclass
from typing import Any

from ..errors import (
    TARGET_DOWN_REASONS,
    BBAttackError,
    KeyBanned,
    QueryRejected,
    TargetUnavailable,
    UserInputError,
)
from ._rows import Answer

__all__ = [
    "JOURNAL_FORMAT",
    "SCHEMA",
    "JournalBehindError",
    "JournalError",
    "JournalStats",
    "JournalWriteError",
    "Transaction",
    "environment_error",
    "migrate",
    "refused_again",
]

# 1 was the HTTP client's content-keyed cache (bbattack.remote.journal); 2 had no 'refused'.
JOURNAL_FORMAT = 3
OLDER_FORMATS = (2,)  # opened as they are; a writer migrates them (:func:`migrate`)

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
    status TEXT NOT NULL CHECK (status IN ('paid', 'journal', 'lost', 'sent', 'refused')),
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


_QUERIES_ONLY = SCHEMA[
    SCHEMA.index("CREATE TABLE IF NOT EXISTS queries") : SCHEMA.index(
        "CREATE TABLE IF NOT EXISTS lost"
    )
]


class JournalError(UserInputError):
    """The journal cannot answer as asked: a query that differs from the recorded one, a query
    past its end in a replay, an edited row, another target. One line; CLI exit 2."""


class JournalBehindError(JournalError):
    """The journal holds less of a run than the run's other files say (a damaged, truncated or
    replaced file): the run is not in it (``behind`` False), or it ends before the checkpoint
    that a resume starts from (``behind`` True)."""

    def __init__(self, message: str, *, behind: bool) -> None:
        super().__init__(message)
        self.behind = behind


class JournalWriteError(OSError):
    """The journal file could not be written: a full disk, a read-only folder, an I/O error.
    An OSError (errno ENOSPC, EROFS, EIO or EACCES) naming the file. What was committed before
    stays whole; the transaction that failed is rolled back."""


# SQLite's primary result codes that say the file cannot be written, as errno values.
_SQLITE_ERRNO = {13: errno.ENOSPC, 8: errno.EROFS, 10: errno.EIO, 14: errno.EACCES, 3: errno.EACCES}
_MESSAGE_ERRNO = (
    ("disk is full", errno.ENOSPC),
    ("readonly database", errno.EROFS),
    ("disk i/o error", errno.EIO),
    ("unable to open database", errno.EACCES),
)


def environment_error(e: sqlite3.Error, path: str | None) -> JournalWriteError | None:
    """The OSError that a write failure of the machine (not of the journal's content) stands
    for; None for any other SQLite error. An error raised by hand carries no code: its message
    decides then."""
    code = getattr(e, "sqlite_errorcode", None)
    number = None if code is None else _SQLITE_ERRNO.get(int(code) & 0xFF)
    text = str(e).lower()
    number = number or next((n for m, n in _MESSAGE_ERRNO if m in text), None)
    if number is None:
        return None
    return JournalWriteError(number, str(e) or os.strerror(number), path or ":memory:")


@dataclass(frozen=True)
class JournalStats:
    """One run's rows by status, and its last seq. ``lost`` counts every query charged and
    never answered (those in the run's ``lost`` table too, asked again since, and those a
    defence refused); ``refused`` those a defence refused; ``lost_billed`` those that a
    billed target was sent and never answered on record: billed, as far as anyone can tell.
    The target billed ``paid + lost_billed`` images."""

    paid: int
    journal: int
    lost: int
    last_seq: int
    lost_billed: int = 0
    refused: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "paid": self.paid,
            "journal": self.journal,
            "lost": self.lost,
            "lost_billed": self.lost_billed,
            "refused": self.refused,
        }


class Transaction:
    """``with Transaction(conn, path):`` BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an
    exception). A full disk or a read-only file, at any point of it, is rolled back and raised
    as a :class:`JournalWriteError`."""

    def __init__(self, conn: sqlite3.Connection, path: str | None = None) -> None:
        self.conn, self.path = conn, path

    def __enter__(self) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise environment_error(e, self.path) or e from None

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self._commit()
                return
            except sqlite3.Error as e:
                exc = e
        with contextlib.suppress(sqlite3.Error):  # SQLite rolls back itself on some errors
            self.conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            failed = environment_error(exc, self.path)
            if failed is not None:
                raise failed from None
            if exc_type is None:
                raise exc

    def _commit(self) -> None:
        self.conn.execute("COMMIT")  # one place: tests make it fail as a full disk would


def grows(names: Any) -> bool:
    """A vocabulary that gives ids as labels appear (a label API's), not a fixed class list."""
    return bool(getattr(names, "grows", False))


def name_list(names: Any, num_classes: int) -> list[str] | None:
    """A model's class names, for a replay to print the same names; None for a vocabulary
    (stored in ``labels``) or where there are none."""
    if names is None or grows(names) or num_classes > 100_000:
        return None
    return [str(names.name(i)) for i in range(num_classes)]


def target_info(target: Any) -> dict[str, Any]:
    """What a run records of its target (``runs.info``): enough for a replay to stand in for
    it (names, shape, limits) without the target."""
    names = target.class_names
    return {
        "name": target.name,
        "backend": target.backend,
        "input_shape": list(target.input_shape),
        "num_classes": int(target.num_classes),
        "names": name_list(names, target.num_classes),
        "vocabulary": grows(names),
        "query_limit": target.query_limit(),
        "eight_bit": bool(getattr(target, "eight_bit", False)),
        "billed": bool(getattr(target, "billed", False)),
    }


def describe_error(e: BaseException) -> str:
    """``<stop reason or exception name>: <message>``, one line."""
    reason = getattr(e, "stop_reason", None) if isinstance(e, TargetUnavailable) else None
    text = " ".join(str(e).split())[:300]
    return f"{reason or type(e).__name__}: {text}"


def billed_rows(error: BaseException | None, sent: list[int], billed: bool) -> set[int]:
    """The rows of a failed call to a billed target that may have been billed: all ``sent``
    where it failed for a reason the target did not give (an interrupt, a crash); where the
    target's own error says which images it billed (``billed_rows``: positions among those
    sent, e.g. the answered calls of a batch that then hit the quota), those."""
    if error is None or not billed:
        return set()
    if not isinstance(error, BBAttackError):
        return set(sent)
    return {sent[i] for i in getattr(error, "billed_rows", ()) if 0 <= i < len(sent)}


def row_status(answered: bool, paid_here: bool, billed: bool, refused: bool = False) -> str:
    """A new row's status: answered (paid here, or by an earlier row), else billed and never
    answered on record ('sent': it counts as lost_billed), else refused by a defence, else
    lost."""
    if answered:
        return "paid" if paid_here else "journal"
    return "sent" if billed else "refused" if refused else "lost"


def refused_again(error: str | None) -> QueryRejected:
    """A refused row met again where no defence refused it (a remote service's refusal, on
    resume or replay): the same refusal, rebuilt from its recorded ``reason: message``."""
    reason, _, message = (error or "").partition(": ")
    return KeyBanned(message) if reason == KeyBanned.stop_reason else QueryRejected(message)


def migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a journal of an older format to this one, in place, in one transaction: format 2
    lacks 'refused' in the queries table's status check, which SQLite cannot alter, so the
    table is rebuilt (same rows, same order, same chain)."""
    if version == 2:
        with Transaction(conn):
            conn.execute("ALTER TABLE queries RENAME TO queries_v2")
            conn.execute("DROP INDEX IF EXISTS queries_digest")
            for statement in filter(str.strip, _QUERIES_ONLY.split(";")):
                conn.execute(statement)  # not executescript: it would commit first
            conn.execute("INSERT INTO queries SELECT * FROM queries_v2")
            conn.execute("DROP TABLE queries_v2")
            conn.execute(f"PRAGMA user_version={JOURNAL_FORMAT}")


def lost_again(seq: int, status: str, error: str | None) -> BaseException:
    """A lost answer met again in a replay: the same failure where the target said why (the
    run stopped there), else an error: the journal ends there. A refused row: the refusal."""
    if status == "refused":
        return refused_again(error)
    reason, _, message = (error or "").partition(": ")
    if status in ("lost", "sent") and reason in TARGET_DOWN_REASONS:
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
