"""The benchmark database: one SQLite file per grid, safe to kill at any moment.

Every write is one transaction. A case's result, its per-step metrics and its adversarial
image are committed together with ``status = 'done'``, so after a crash (even SIGKILL) a case
is either finished, whole, or not finished at all and is redone from its start. Finished rows
are never updated again.

Tables
------
meta    key/value: schema version, the config (TOML text, parsed JSON and hash), package
        versions, model, backend, machine, created.
images  one row per source image: name, path, digest, clean top-1 class, PNG bytes.
cases   one row per grid point (primary key: a hash of everything that defines the case),
        its status ('pending' | 'done') and, once done, its metrics and adversarial PNG.
steps   per-step metrics of finished cases (case_id, step, queries, loss, target_prob,
        target_rank, eps, lr).

A case's ``provenance`` (JSON) records package versions, the model (weights hash, backend,
device), the case config and its hash, the seed, the machine, and its task's journal (file,
run, last sequence number, hash-chain head, and the checkpoint step it resumed from).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from .outcome import CaseOutcome

__all__ = ["SCHEMA_VERSION", "BenchDB", "CaseOutcome", "CaseRow"]

SCHEMA_VERSION = 3  # 2: cases.norm; 3: cases.provenance (a v2 file gains it when opened)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    name TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    digest TEXT NOT NULL,
    clean_id INTEGER NOT NULL,
    clean_name TEXT,
    png BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS cases (
    id TEXT PRIMARY KEY,
    idx INTEGER NOT NULL UNIQUE,
    attack TEXT NOT NULL,
    threat TEXT NOT NULL,
    k INTEGER NOT NULL,
    norm TEXT NOT NULL,
    eps REAL NOT NULL,
    budget INTEGER NOT NULL,
    image TEXT NOT NULL REFERENCES images(name),
    target_id INTEGER NOT NULL,
    target_name TEXT,
    start_image TEXT,
    seed INTEGER NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'done')),
    success INTEGER,
    queries INTEGER,
    queries_at_success INTEGER,
    queries_by_kind TEXT,
    linf REAL,
    l2 REAL,
    final_top1 INTEGER,
    final_topk TEXT,
    stop_reason TEXT,
    steps INTEGER,
    wall_time_s REAL,
    finished_at TEXT,
    worker TEXT,
    adv_png BLOB,
    provenance TEXT
);
CREATE INDEX IF NOT EXISTS cases_status ON cases(status);
CREATE TABLE IF NOT EXISTS steps (
    case_id TEXT NOT NULL REFERENCES cases(id),
    step INTEGER NOT NULL,
    queries INTEGER NOT NULL,
    loss REAL,
    target_prob REAL,
    target_rank INTEGER,
    eps REAL,
    lr REAL,
    PRIMARY KEY (case_id, step)
);
"""

_CASE_KEYS = (
    "id",
    "idx",
    "attack",
    "threat",
    "k",
    "norm",
    "eps",
    "budget",
    "image",
    "target_id",
    "target_name",
    "start_image",
    "seed",
    "params",
)


@dataclass(frozen=True)
class CaseRow:
    """One grid point: everything a worker needs to run the case (plain, picklable data)."""

    id: str
    idx: int
    attack: str
    threat: str  # "ql" | "pi" | "lo"
    k: int
    norm: str  # "linf" | "l2"
    eps: float
    budget: int
    image: str
    target_id: int
    target_name: str | None
    start_image: str | None
    seed: int
    params: str  # JSON of the attack's hyperparameters (without eps)

    def params_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.params)
        return out


class BenchDB:
    """A thin typed layer over the SQLite file. Open with :meth:`open`."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.lock_fd: int | None = None  # held by a running bench (see runner._locked)

    @classmethod
    def open(cls, path: str | Path, *, create: bool, read_only: bool = False) -> BenchDB:
        """Open a database: ``create`` a new one, or open an existing one for writing, or
        (``read_only``, the report) without writing anything."""
        p = Path(path)
        if create:
            if not p.parent.is_dir():
                raise UserInputError(f"{p.parent}: no such directory for the database")
            try:
                conn = sqlite3.connect(p, isolation_level=None)
                cls._pragmas(conn)
                conn.executescript(_SCHEMA)
            except sqlite3.Error as e:
                raise UserInputError(f"{p}: cannot create the database ({e})") from None
            return cls(conn, p)
        version = cls._probe(p)
        try:
            if read_only:
                conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
            else:
                conn = sqlite3.connect(p, isolation_level=None)
                cls._pragmas(conn)
                if version == 2:  # cases gain their provenance; nothing else changes
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute("ALTER TABLE cases ADD COLUMN provenance TEXT")
                    conn.execute(
                        "UPDATE meta SET value = ? WHERE key = 'schema_version'",
                        (str(SCHEMA_VERSION),),
                    )
                    conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise UserInputError(f"{p}: cannot open the database ({e})") from None
        conn.row_factory = sqlite3.Row
        return cls(conn, p)

    @staticmethod
    def _pragmas(conn: sqlite3.Connection) -> None:
        # WAL + synchronous=FULL: a commit survives SIGKILL and power loss; readers (the
        # report) never block the writer. isolation_level=None: explicit BEGIN/COMMIT.
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")

    @staticmethod
    def _probe(p: Path) -> int:
        """Check, without writing a byte, that ``p`` is a benchmark database of our schema
        (or of schema 2, which gains a column); its schema version. Opening a foreign file for
        writing would switch it to WAL."""
        if p.is_dir():
            raise UserInputError(f"{p}: is a directory, not a benchmark database")
        if not p.is_file():
            raise UserInputError(f"{p}: no such benchmark database")
        try:
            with p.open("rb") as f:
                header = f.read(16)
        except OSError as e:
            raise UserInputError(f"{p}: cannot read ({e.strerror})") from None
        if header != b"SQLite format 3\x00":
            raise UserInputError(f"{p}: not a bbattack benchmark database")
        try:
            conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as e:
            raise UserInputError(f"{p}: cannot open the database ({e})") from None
        try:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if not {"meta", "cases", "steps", "images"} <= names:
                raise UserInputError(f"{p}: not a bbattack benchmark database")
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            # A damaged file would resume from half-read rows; say so before anything runs.
            check = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if check != "ok":
                what = " ".join(str(check).replace("*** in database main ***", "").split())
                raise UserInputError(f"{p}: the database is damaged ({what})")
        except sqlite3.Error as e:
            raise UserInputError(f"{p}: cannot read the database ({e})") from None
        finally:
            conn.close()
        v = None if row is None else row[0]
        if v not in ("2", str(SCHEMA_VERSION)):
            raise UserInputError(f"{p}: database schema {v}, this bbattack reads {SCHEMA_VERSION}")
        return int(v)

    def finish(self) -> None:
        """A finished grid becomes one plain file (no -wal/-shm), easy to copy and to read on
        read-only storage."""
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.execute("PRAGMA journal_mode=DELETE")

    def close(self) -> None:
        self.conn.close()
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    def __enter__(self) -> BenchDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- setup

    def meta(self) -> dict[str, str]:
        return {r["key"]: r["value"] for r in self.conn.execute("SELECT key, value FROM meta")}

    def initialise(
        self,
        meta: dict[str, str],
        images: Iterable[tuple[str, str, str, int, str | None, bytes]],
        cases: Iterable[CaseRow],
    ) -> None:
        """Write the grid once, in one transaction (a crash leaves an empty database)."""
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("schema_version", str(SCHEMA_VERSION)), *meta.items()],
            )
            c.executemany(
                "INSERT INTO images (name, path, digest, clean_id, clean_name, png) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                list(images),
            )
            cols = ", ".join(_CASE_KEYS)
            marks = ", ".join("?" for _ in _CASE_KEYS)
            c.executemany(
                f"INSERT INTO cases ({cols}, status) VALUES ({marks}, 'pending')",
                (tuple(getattr(r, k) for k in _CASE_KEYS) for r in cases),  # streamed
            )

    # -- running

    def pending(self) -> list[CaseRow]:
        cols = ", ".join(_CASE_KEYS)
        rows = self.conn.execute(
            f"SELECT {cols} FROM cases WHERE status = 'pending' ORDER BY idx"
        ).fetchall()
        return [CaseRow(**dict(r)) for r in rows]

    def counts(self) -> tuple[int, int, int]:
        """(done, total, succeeded); a success that moved no pixel (an older bbattack's
        ``already``) is none."""
        r = self.conn.execute(
            "SELECT SUM(status = 'done'), COUNT(*), SUM(success = 1 AND linf != 0) FROM cases"
        ).fetchone()
        return int(r[0] or 0), int(r[1] or 0), int(r[2] or 0)

    def record(self, o: CaseOutcome) -> bool:
        """Store a finished case with its steps, atomically. Returns False (and writes
        nothing) if the case is already done: finished results are never overwritten."""
        with self.transaction() as c:
            cur = c.execute(
                "UPDATE cases SET status = 'done', success = ?, queries = ?, "
                "queries_at_success = ?, queries_by_kind = ?, linf = ?, l2 = ?, final_top1 = ?, "
                "final_topk = ?, stop_reason = ?, steps = ?, wall_time_s = ?, worker = ?, "
                "adv_png = ?, provenance = ?, "
                "finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                "WHERE id = ? AND status = 'pending'",
                (
                    int(o.success),
                    o.queries,
                    o.queries_at_success,
                    json.dumps(o.queries_by_kind),
                    o.linf,
                    o.l2,
                    o.final_top1,
                    json.dumps(o.final_topk),
                    o.stop_reason,
                    o.steps,
                    o.wall_time_s,
                    o.worker,
                    o.adv_png,
                    json.dumps(o.provenance),
                    o.case_id,
                ),
            )
            if cur.rowcount != 1:
                return False
            # A step row can only exist for a done case (same transaction), so no cleanup of
            # a half-written case is ever needed.
            c.executemany(
                "INSERT INTO steps (case_id, step, queries, loss, target_prob, target_rank, "
                "eps, lr) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        o.case_id,
                        t["step"],
                        t["queries"],
                        t.get("loss"),
                        t.get("target_prob"),
                        t.get("target_rank"),
                        t.get("eps"),
                        t.get("lr"),
                    )
                    for t in o.trace
                ],
            )
        return True

    # -- reading (the report)

    def cases(self, status: str | None = "done") -> list[dict[str, Any]]:
        """Case rows as dicts, without the PNG blob; JSON columns decoded."""
        q = (
            "SELECT c.*, i.clean_id AS original_id, i.clean_name AS original_name "
            "FROM cases c JOIN images i ON i.name = c.image"
        )
        args: tuple[Any, ...] = ()
        if status is not None:
            q += " WHERE c.status = ?"
            args = (status,)
        out = []
        for r in self.conn.execute(q + " ORDER BY c.idx", args):
            d = dict(r)
            d.pop("adv_png")
            for key in ("params", "queries_by_kind", "final_topk", "provenance"):
                if d.get(key) is not None:
                    d[key] = json.loads(d[key])
            d["success"] = None if d["success"] is None else bool(d["success"])
            if d["success"] and d["linf"] == 0:  # an older bbattack's success that moved nothing
                d.update(success=False, stop_reason="already", queries_at_success=None)
            out.append(d)
        return out

    def steps(self, case_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT step, queries, loss, target_prob, target_rank, eps, lr FROM steps "
            "WHERE case_id = ? ORDER BY step",
            (case_id,),
        )
        return [dict(r) for r in rows]

    def adv_png(self, case_id: str) -> bytes | None:
        r = self.conn.execute("SELECT adv_png FROM cases WHERE id = ?", (case_id,)).fetchone()
        return None if r is None else r[0]

    def images(self) -> dict[str, dict[str, Any]]:
        """Source images by name, PNG bytes included."""
        return {r["name"]: dict(r) for r in self.conn.execute("SELECT * FROM images")}
