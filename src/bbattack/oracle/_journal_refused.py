"""The journal's refused rows (a mixin of :class:`~bbattack.oracle.journal.Journal`): a batch
a defence above the journal refused is recorded as asked and refused, one ``refused`` row per
image with the error, nothing asked of the target; a resumed or replayed run meets the rows
on its tape, where its restored defence refuses them again."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._journal_db import JournalError, describe_error
from ._rows import chain_next, digests

__all__ = ["JournalRefusals"]


class JournalRefusals:
    """What the writer records of refusals; it holds the connection, the run and the chain."""

    _conn: sqlite3.Connection
    run: int | None
    mode: str
    position: int
    _chain: str
    _tape_end: int
    _info: dict[str, Any]

    def _write(self, rows: list[tuple[Any, ...]], taped: int) -> None:
        raise NotImplementedError

    def refuse(
        self, x: NDArray[np.float32], ids: NDArray[np.int64], kind: str, error: BaseException
    ) -> None:
        """Record a charged batch that a defence above the journal refused with ``error``:
        one 'refused' row per image, nothing asked of the target. On the tape (resume,
        replay) the rows must be there, refused: a row answered there means the defence's
        state differs from the recorded run's."""
        if self.run is None:
            raise JournalError("the journal has no run: call new_run, resume_run or replay_run")
        n, first = len(x), self.position + 1
        dig = digests(x, bool(self._info.get("eight_bit")))
        taped = self._refused_on_tape(first, ids, kind, dig)
        if taped < n and self.mode == "replay":
            raise JournalError(
                f"query {first + taped} is not in the journal (asked {dig[taped]}, journal: none)"
            )
        err, now, rows = describe_error(error), time.time(), []
        for j in range(taped, n):
            seq, ex = first + j, int(ids[j])
            self._chain = chain_next(self._chain, seq, ex, kind, dig[j], "refused", None, err)
            row = (self.run, seq, ex, kind, dig[j], None, None, now, "refused", err, self._chain)
            rows.append(row)
        self._write(rows, taped)
        self.position += n

    def _refused_on_tape(
        self, first: int, ids: NDArray[np.int64], kind: str, dig: list[str]
    ) -> int:
        """Walk the recorded rows of a refused batch (resume, replay); returns how many."""
        if first > self._tape_end:
            return 0
        cur = self._conn.execute(
            "SELECT seq, example, kind, digest, status, error, chain FROM queries "
            "WHERE run = ? AND seq BETWEEN ? AND ? ORDER BY seq",
            (self.run, first, first + len(dig) - 1),
        )
        count = 0
        for seq, ex, k, d, status, err, chain in cur.fetchall():
            j = int(seq) - first
            if (str(d), int(ex), str(k)) != (dig[j], int(ids[j]), kind):
                raise JournalError(
                    f"query {seq} differs from the journal: asked {dig[j]} (example "
                    f"{int(ids[j])}, {kind}), journal {d} (example {ex}, {k})"
                )
            if status != "refused":
                raise JournalError(
                    f"query {seq} was refused by a defence now and {status} in the journal: "
                    "the defence's state differs from the recorded run's"
                )
            link = chain_next(self._chain, int(seq), int(ex), str(k), str(d), "refused", None, err)
            if link != chain:
                raise JournalError(f"journal row {seq} was altered: its hash chain does not hold")
            self._chain = link
            count += 1
        return count
