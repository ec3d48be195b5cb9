"""The journal's reading side: counts, runs, their targets and the label vocabulary (a mixin
of :class:`~bbattack.oracle.journal.Journal`), and the connection that never writes."""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from ._journal_db import JournalBehindError, JournalError, JournalStats

__all__ = ["JournalReading", "open_read_only"]


class JournalReading:
    """What a journal reads back; the writer holds the connection, the run and the chain."""

    _conn: sqlite3.Connection
    path: str | None
    read_only: bool
    run: int | None
    _chain: str

    def stats(self, run: int | None = None) -> JournalStats:
        r = self.run if run is None else run
        counts = dict(
            self._conn.execute(
                "SELECT status, COUNT(*) FROM queries WHERE run = ? GROUP BY status", (r,)
            ).fetchall()
        )
        moved = dict(
            self._conn.execute(
                "SELECT status, COUNT(*) FROM lost WHERE run = ? GROUP BY status", (r,)
            ).fetchall()
        )
        sent = int(counts.get("sent", 0)) + int(moved.get("sent", 0))
        refused = int(counts.get("refused", 0))
        lost = int(counts.get("lost", 0)) + int(moved.get("lost", 0)) + sent + refused
        paid, journal = int(counts.get("paid", 0)), int(counts.get("journal", 0))
        return JournalStats(
            paid, journal, lost, self._last_seq(r), lost_billed=sent, refused=refused
        )

    def lost_billed(self, run: int | None = None) -> int:
        """Rows of the run sent to a billed target and never answered on record, before or
        after a resume moved them to ``lost``: billed as far as anyone can tell."""
        r = self.run if run is None else run
        row = self._conn.execute(
            "SELECT (SELECT COUNT(*) FROM queries WHERE run = ?1 AND status = 'sent') + "
            "(SELECT COUNT(*) FROM lost WHERE run = ?1 AND status = 'sent')",
            (r,),
        ).fetchone()
        return int(row[0])

    def chain_head(self) -> str:
        """The chain link of the last query asked: it commits to everything before it."""
        return self._chain

    def run_info(self, run: int) -> dict[str, Any]:
        row = self._conn.execute("SELECT info FROM runs WHERE run = ?", (run,)).fetchone()
        out: dict[str, Any] = {} if row is None else json.loads(row[0])
        return out

    def run_target(self, run: int) -> tuple[str | None, str | None]:
        """The identity of the target a run was made against, and its view (JSON)."""
        row = self._conn.execute("SELECT target, view FROM runs WHERE run = ?", (run,)).fetchone()
        return (None, None) if row is None else (row[0], row[1])

    def runs(self) -> list[int]:
        """The runs in this file, oldest first."""
        return [int(r[0]) for r in self._conn.execute("SELECT run FROM runs ORDER BY run")]

    def labels(self) -> list[str]:
        return [str(r[0]) for r in self._conn.execute("SELECT name FROM labels ORDER BY id")]

    def _billed_up_to(self, position: int) -> int:
        """Paid rows of the run up to ``position``, and every call billed and never answered:
        it was paid for, whatever comes after it."""
        row = self._conn.execute(
            "SELECT COUNT(*) FROM queries WHERE run = ? AND seq <= ? AND status = 'paid'",
            (self.run, position),
        ).fetchone()
        return int(row[0]) + self.lost_billed()

    def _writable(self) -> None:
        if self.read_only:
            raise JournalError(f"{self.path}: opened read-only")

    def _check_run(self, run: int) -> None:
        if self._conn.execute("SELECT 1 FROM runs WHERE run = ?", (run,)).fetchone() is None:
            raise JournalBehindError(f"{self.path}: no run {run} in this journal", behind=False)

    def _last_seq(self, run: int | None) -> int:
        r = self._conn.execute("SELECT MAX(seq) FROM queries WHERE run = ?", (run,)).fetchone()
        return int(r[0] or 0)


def open_read_only(path: str) -> sqlite3.Connection:
    """A connection that never writes. Read-write with query_only where the directory allows
    it, so that closing removes the WAL side files as a writer's close does; else mode=ro."""
    where = os.path.abspath(path)
    if os.access(where, os.W_OK) and os.access(os.path.dirname(where), os.W_OK):
        conn = sqlite3.connect(f"file:{where}?mode=rw", uri=True, isolation_level=None)
        conn.execute("PRAGMA query_only=ON")
        return conn
    return sqlite3.connect(f"file:{where}?mode=ro", uri=True, isolation_level=None)
