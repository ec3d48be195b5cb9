"""The query journal: every query of every target, in one SQLite file, written before its
answer is used.

It is the audit log (what was asked, what came back, what was paid), the cache that makes a
resumed or repeated run pay nothing twice, and the tape that ``bbattack replay`` plays back.
The oracle owns it: an attack never sees it.

The tables are described in _journal_db.py.

Modes: ``new_run`` records; ``resume_run`` (then ``seek`` to a checkpoint's position) answers
the run's recorded queries by number, checking each input's digest, and records beyond them;
``replay_run`` answers every query from the run's rows and never asks the target.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import BBAttackError, QueryRejected
from ._journal_db import (
    JOURNAL_FORMAT,
    OLDER_FORMATS,
    SCHEMA,
    JournalBehindError,
    JournalError,
    JournalStats,
    Transaction,
    billed_rows,
    describe_error,
    environment_error,
    grows,
    lookup,
    lost_again,
    migrate,
    row_status,
    target_info,
)
from ._journal_read import JournalReading, open_read_only
from ._journal_refused import JournalRefusals
from ._rows import Answer, assemble, chain_next, digests, split
from .targets import Target, target_identity
from .views import Observation, View

__all__ = ["JOURNAL_FORMAT", "Journal", "JournalError", "JournalStats", "target_identity"]

_ZERO = "0" * 64
_INSERT = (
    "INSERT OR REPLACE INTO queries (run, seq, example, kind, digest, labels, scores, time, "
    "status, error, chain) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class Journal(JournalRefusals, JournalReading):
    """One journal file (``path`` None: in memory). Open a run with :meth:`new_run`,
    :meth:`resume_run` or :meth:`replay_run`, then hand it to an :class:`~bbattack.Oracle`.
    ``durable``: fsync every commit (paid targets); without it a commit still survives a
    killed process, not a power loss."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        read_only: bool = False,
        durable: bool = True,
    ) -> None:
        self.path = None if path is None else os.fspath(path)
        self.read_only = read_only
        self.run: int | None = None
        self.mode = "record"
        self.position = 0  # the last sequence number asked in this run
        self._chain = _ZERO
        self._tape_end = 0  # resume/replay: the run's rows up to here answer by number
        self._session: int | None = None
        self._run_paid = 0  # paid rows of the run up to ``position``, and its lost_billed
        self._session_paid = 0  # paid by this process: the target's own count
        self._names: Any = None
        self._names_stored = 0
        self._info: dict[str, Any] = {}
        try:
            if read_only:
                if self.path is None or not os.path.isfile(self.path):
                    raise JournalError(f"no journal at {self.path}")
                self._conn = open_read_only(self.path)
            else:
                where = ":memory:" if self.path is None else self.path
                self._conn = sqlite3.connect(where, isolation_level=None, timeout=30.0)
                if self.path is not None:
                    # WAL: an auditor can read while a run writes. FULL: a commit is on disk
                    # (fsync) before the answer it holds is used. A free (local) target needs
                    # less: under WAL, NORMAL commits survive a killed process (only a power
                    # loss can drop the last ones) and skip the fsync that costs 4 ms a query.
                    self._conn.execute("PRAGMA journal_mode=WAL")
                    self._conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            known = (JOURNAL_FORMAT, *OLDER_FORMATS)
            if version not in (0, *known) or (version == 0 and read_only):
                raise JournalError(
                    f"{self.path}: not a bbattack query journal of format {JOURNAL_FORMAT} "
                    f"(format {version}); give a new journal file"
                )
            if not read_only:
                if version in OLDER_FORMATS:  # read as it is; written in this format
                    migrate(self._conn, version)
                self._conn.executescript(SCHEMA)
                self._conn.execute(f"PRAGMA user_version={JOURNAL_FORMAT}")
        except sqlite3.Error as e:  # a full disk or a read-only folder: an OSError
            failed = environment_error(e, self.path)
            raise failed or JournalError(f"cannot open the journal {self.path}: {e}") from None

    # -- runs

    def new_run(self, note: dict[str, Any] | None = None) -> int:
        """Start recording a new run; returns its number."""
        self._writable()
        with self._tx():
            cur = self._conn.execute(
                "INSERT INTO runs (created, note) VALUES (?, ?)",
                (time.time(), json.dumps(note or {}, sort_keys=True)),
            )
        self._open(int(cur.lastrowid or 0), "record")
        return self.run or 0

    def restart_run(self, note: dict[str, Any] | None = None) -> int:
        """A new run against the target and view the current run is bound to (a run that
        cannot be resumed starts over); its answers still serve the new run's repeats."""
        if self.run is None:
            raise JournalError(f"{self.path}: no run to start over")
        (target, view), info = self.run_target(self.run), self.run_info(self.run)
        self.new_run(note)
        with self._tx():
            self._conn.execute(
                "UPDATE runs SET target = ?, view = ?, info = ? WHERE run = ?",
                (target, view, json.dumps(info), self.run),
            )
        self._info = info
        return self.run or 0

    def resume_run(self, run: int) -> None:
        """Continue ``run``: its recorded queries answer by number, from the start or from a
        checkpoint's position (:meth:`seek`); answers lost in flight are moved to ``lost``
        and asked again (those sent to a billed target stay counted: ``lost_billed``)."""
        self._writable()
        self._check_run(run)
        with self._tx():
            first = self._conn.execute(
                "SELECT MIN(seq) FROM queries WHERE run = ? AND status IN ('lost', 'sent')",
                (run,),
            ).fetchone()[0]
            if first is not None:  # nothing after a lost answer stays on the tape
                self._conn.execute(
                    "INSERT INTO lost SELECT run, seq, example, kind, digest, time, status, "
                    "error, ? FROM queries WHERE run = ? AND seq >= ? AND status IN "
                    "('lost', 'sent')",
                    (time.time(), run, int(first)),
                )
                self._conn.execute(
                    "DELETE FROM queries WHERE run = ? AND seq >= ?", (run, int(first))
                )
        self._open(run, "resume")

    def seek(self, run: int, position: int) -> None:
        """Go on from a checkpoint taken after query ``position`` of ``run``."""
        if self.run != run or self.mode == "record":
            raise JournalError(
                f"{self.path}: the checkpoint is of run {run}; the journal is on run {self.run}"
            )
        if position > self._tape_end:
            raise JournalBehindError(
                f"{self.path}: run {run} ends at query {self._tape_end}, the checkpoint is at "
                f"query {position}",
                behind=True,
            )
        self._at(position)

    def replay_run(self, run: int) -> None:
        """Answer every query of ``run`` from its rows; a query past them is an error."""
        self._check_run(run)
        self._open(run, "replay")

    def _open(self, run: int, mode: str) -> None:
        self.run, self.mode = run, mode
        self._tape_end = 0 if mode == "record" else self._last_seq(run)
        self._at(0)
        self._session_paid = 0
        if not self.read_only:
            with self._tx():
                cur = self._conn.execute(
                    "INSERT INTO sessions (run, mode, started, position) VALUES (?, ?, ?, 0)",
                    (run, "start" if mode == "record" else mode, time.time()),
                )
            self._session = int(cur.lastrowid or 0)

    def _at(self, position: int) -> None:
        self.position = position
        row = self._conn.execute(
            "SELECT chain FROM queries WHERE run = ? AND seq = ?", (self.run, position)
        ).fetchone()
        self._chain = _ZERO if row is None else str(row[0])
        self._run_paid = self._billed_up_to(position)

    # -- the oracle's side

    def attach(self, target: Target, view: View) -> None:
        """Bind the run to its target and view (the oracle calls this): a new run records
        them; a resumed or replayed one must match them. A label API's vocabulary is seeded
        from the file, so label ids mean the same names in every run of it."""
        if self.run is None:
            self.new_run()
        ident, vkey = target_identity(target), json.dumps(view.describe(), sort_keys=True)
        was_target, was_view = self.run_target(self.run or 0)
        names: Any = target.class_names
        if was_target is None:
            self._writable()
            with self._tx():
                self._conn.execute(
                    "UPDATE runs SET target = ?, view = ?, info = ? WHERE run = ?",
                    (ident, vkey, json.dumps(target_info(target)), self.run),
                )
        elif (was_target, was_view) != (ident, vkey):
            what, was, now = (
                ("target", was_target, ident) if was_target != ident else ("view", was_view, vkey)
            )
            raise JournalError(
                f"{self.path}: run {self.run} was made against another {what} ({was}; this "
                f"run: {now})"
            )
        self._info = self.run_info(self.run or 0)
        if grows(names):
            stored = self.labels()
            for i, name in enumerate(stored):
                if i < len(names) and names.name(i).casefold() != name.casefold():
                    raise JournalError(
                        f"{self.path}: label {i} is {name!r} in the journal and "
                        f"{names.name(i)!r} here: open the oracle before resolving label names"
                    )
                if i >= len(names):
                    names.resolve(name)
            self._names, self._names_stored = names, len(stored)

    def query_limit(self, target_limit: int | None) -> int | None:
        """The target's own limit (a spend cap) as the whole run sees it: the target counts
        what this process paid, the run also paid before it was resumed (answered or not)."""
        if target_limit is None:
            return None
        return target_limit + self._session_paid - self._run_paid

    def answer(
        self,
        x: NDArray[np.float32],
        ids: NDArray[np.int64],
        kind: str,
        view: View,
        observe: Callable[[NDArray[np.float32]], Observation],
    ) -> Observation:
        """The observation of a charged batch: rows the run already holds answer by number
        (their input must match), then rows seen before answer by content, then the target
        answers the rest. Everything is committed before it is returned."""
        if self.run is None:
            raise JournalError("the journal has no run: call new_run, resume_run or replay_run")
        n, first = len(x), self.position + 1
        dig = digests(x, bool(self._info.get("eight_bit")))
        got: list[Answer | None] = [None] * n
        taped = self._from_tape(first, ids, kind, dig, got)
        new = [j for j in range(n) if got[j] is None]
        if new and self.mode == "replay":
            j = new[0]
            raise JournalError(
                f"query {first + j} is not in the journal (asked {dig[j]}, journal: none)"
            )
        known = lookup(self._conn, self.run, {dig[j] for j in new})
        pay: dict[str, int] = {}  # digest -> the row that pays for it
        for j in new:
            if dig[j] not in known and dig[j] not in pay:
                pay[dig[j]] = j
        if pay and self._info.get("billed"):
            # Billed targets: the rows go in as 'sent' first, so a kill mid-call is on record.
            sent = [(first + j, int(ids[j]), dig[j]) for j in pay.values()]
            now = time.time()
            self._write(
                [(self.run, s, e, kind, d, None, None, now, "sent", None, "") for s, e, d in sent],
                0,
            )
        error: BaseException | None = None
        try:
            if pay:
                obs = observe(np.ascontiguousarray(x[list(pay.values())]))
                known.update(zip(pay, split(obs), strict=True))
        except BaseException as e:  # noqa: BLE001 - recorded as lost, then raised again
            error = e
        rows = []
        now = time.time()
        billed = billed_rows(error, list(pay.values()), bool(self._info.get("billed")))
        counted = isinstance(error, BBAttackError)  # the target's own error: it counted those
        refused = isinstance(error, QueryRejected)  # a defended API's answer: kept on the tape
        for j in new:
            a = None if error is not None else known[dig[j]]
            status = row_status(a is not None, pay.get(dig[j]) == j, j in billed, refused)
            err = None if error is None else describe_error(error)
            seq, ex = first + j, int(ids[j])
            self._chain = chain_next(self._chain, seq, ex, kind, dig[j], status, a, err)
            lab, sc = (None, None) if a is None else (a.labels, a.scores)
            rows.append((self.run, seq, ex, kind, dig[j], lab, sc, now, status, err, self._chain))
            got[j] = a
            self._run_paid += status in ("paid", "sent")  # sent: billed, never answered
            self._session_paid += status == "paid" or (status == "sent" and counted)
        self._write(rows, taped)
        self.position += n
        if error is not None:
            raise error
        return assemble(view, [a for a in got if a is not None])

    def _from_tape(
        self, first: int, ids: NDArray[np.int64], kind: str, dig: list[str], got: list[Any]
    ) -> int:
        """Fill ``got`` from the run's recorded rows (resume, replay); returns how many."""
        n = len(got)
        if first > self._tape_end:
            return 0
        cur = self._conn.execute(
            "SELECT seq, example, kind, digest, labels, scores, status, error, chain "
            "FROM queries WHERE run = ? AND seq BETWEEN ? AND ? ORDER BY seq",
            (self.run, first, first + n - 1),
        )
        count = 0
        lost: BaseException | None = None
        for seq, ex, k, d, lab, sc, status, err, chain in cur.fetchall():
            j = int(seq) - first
            if (str(d), int(ex), str(k)) != (dig[j], int(ids[j]), kind):
                raise JournalError(
                    f"query {seq} differs from the journal: asked {dig[j]} (example "
                    f"{int(ids[j])}, {kind}), journal {d} (example {ex}, {k})"
                )
            if status == "sent" and not err:  # a replay of a run killed mid-call
                raise lost_again(int(seq), "sent", err)
            a = None if status in ("lost", "sent", "refused") else Answer(lab, sc)
            link = chain_next(self._chain, int(seq), int(ex), str(k), str(d), str(status), a, err)
            if link != chain:
                raise JournalError(f"journal row {seq} was altered: its hash chain does not hold")
            self._chain = link
            if a is None:  # the whole batch was lost or refused (a remote defence): again
                lost = lost or lost_again(int(seq), str(status), err)
                continue
            got[j] = a
            self._run_paid += status == "paid"
            count += 1
        if lost is not None:
            self.position = first + n - 1
            raise lost
        return count

    def _write(self, rows: list[tuple[Any, ...]], taped: int) -> None:
        """One transaction: the rows, the session's count of answers by number, new labels."""
        if self.read_only or (not rows and not taped):
            return
        with self._tx():
            self._conn.executemany(_INSERT, rows)
            if taped:
                self._conn.execute(
                    "UPDATE sessions SET from_journal = from_journal + ? WHERE session = ?",
                    (taped, self._session),
                )
            names = self._names
            if names is not None and len(names) > self._names_stored:
                self._conn.executemany(
                    "INSERT INTO labels (id, name) VALUES (?, ?)",
                    [(i, names.name(i)) for i in range(self._names_stored, len(names))],
                )
                self._names_stored = len(names)

    def close(self) -> None:
        """Fold the WAL into the file (one plain file to copy or audit) and close."""
        try:
            if not self.read_only and self.path is not None:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass  # another connection reads it: the WAL stays, nothing is lost
        self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tx(self) -> Transaction:
        return Transaction(self._conn, self.path)
