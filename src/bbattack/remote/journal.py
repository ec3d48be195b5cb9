"""The SQLite journal behind HttpLabelTarget's cache and audit log: one row per distinct
(PNG bytes, max_results, wire schema) query that was paid for.

Table ``queries``: ``key`` (primary key, sha256 hex of the PNG bytes followed by
``|max_results=<n>`` and, but for Google's, ``|schema=<tag>``), ``max_results``, ``response``
(the image's answer as the server sent it, as JSON), ``created`` (Unix time), ``paid`` (1: it
was billed), ``hits`` (times it answered a repeat for free), ``endpoint`` (the URL, no key),
``schema`` (the wire schema's tag; 'gcv' for rows from before schemas)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import UserInputError
from .schema import Labels, labels_of

__all__ = ["JOURNAL_VERSION", "Journal", "JournalEntry", "cache_key"]

JOURNAL_VERSION = 1


def cache_key(png: bytes, max_results: int, schema: str = "gcv") -> str:
    """The journal key: sha256 hex of the PNG bytes followed by ``|max_results=<n>``, and by
    ``|schema=<tag>`` for every API but Google's (whose keys predate schemas), so answers of
    different APIs never mix."""
    tail = b"" if schema == "gcv" else b"|schema=" + schema.encode("utf-8")
    return hashlib.sha256(png + b"|max_results=%d" % max_results + tail).hexdigest()


@dataclass(frozen=True)
class JournalEntry:
    """One row of the journal: the answer to one distinct (image, max_results) query."""

    key: str
    max_results: int
    response: Any  # the image's entry as the API sent it (a list for Hugging Face)
    created: float
    paid: bool
    hits: int
    endpoint: str
    schema: str = "gcv"
    decoded: Labels | None = None  # decoded by the client's schema where it read the row

    @property
    def labels(self) -> Labels:
        """(description, score) pairs, as :meth:`HttpLabelTarget.annotate` returns them."""
        return self.decoded if self.decoded is not None else labels_of(self.response)


class Journal:
    """The store itself (its table: the module's docstring); ``path`` None: in memory.
    Thread-safe: one connection, serialised by a lock."""

    def __init__(
        self, path: str | os.PathLike[str] | None, endpoint: str, schema: str = "gcv"
    ) -> None:
        self.endpoint = endpoint
        self.schema = schema
        self.path = None if path is None else os.fspath(path)
        self._lock = threading.Lock()
        try:
            # One connection shared by the worker threads, serialised by the lock.
            self._conn = sqlite3.connect(
                ":memory:" if self.path is None else self.path,
                check_same_thread=False,
                timeout=30.0,
            )
            if self.path is not None:
                # WAL: readers (another process inspecting the log) never block the writer.
                self._conn.execute("PRAGMA journal_mode=WAL")
                # A paid answer must survive a power cut once annotate() has returned it.
                self._conn.execute("PRAGMA synchronous=FULL")
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            if version not in (0, JOURNAL_VERSION):
                raise UserInputError(
                    f"journal {self.path}: format version {version}, this bbattack reads "
                    f"{JOURNAL_VERSION}"
                )
            with self._conn:
                self._conn.execute(
                    "CREATE TABLE IF NOT EXISTS queries ("
                    " key TEXT PRIMARY KEY,"
                    " max_results INTEGER NOT NULL,"
                    " response TEXT NOT NULL,"
                    " created REAL NOT NULL,"
                    " paid INTEGER NOT NULL,"
                    " hits INTEGER NOT NULL DEFAULT 0,"
                    " endpoint TEXT NOT NULL)"
                )
                cols = {str(r[1]) for r in self._conn.execute("PRAGMA table_info(queries)")}
                if "schema" not in cols:  # a journal from before schemas: all Google's
                    self._conn.execute(
                        "ALTER TABLE queries ADD COLUMN schema TEXT NOT NULL DEFAULT 'gcv'"
                    )
                self._conn.execute(f"PRAGMA user_version={JOURNAL_VERSION}")
        except sqlite3.Error as e:
            raise UserInputError(f"cannot open the journal {self.path}: {e}") from None

    def lookup(self, keys: list[str]) -> dict[str, str]:
        """key -> stored response JSON, for the keys that are in the journal."""
        found: dict[str, str] = {}
        with self._lock:
            for i in range(0, len(keys), 500):  # SQLite caps the number of parameters
                chunk = keys[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT key, response FROM queries WHERE key IN ({marks})", chunk
                )
                found.update((str(k), str(r)) for k, r in rows)
        return found

    def record(self, rows: list[tuple[str, int, str]]) -> None:
        """Store paid answers (key, max_results, response JSON) and commit."""
        now = time.time()
        with self._lock, self._conn:
            # OR IGNORE: another client on the same file may have stored it meanwhile.
            self._conn.executemany(
                "INSERT OR IGNORE INTO queries (key, max_results, response, created, paid, "
                "hits, endpoint, schema) VALUES (?, ?, ?, ?, 1, 0, ?, ?)",
                [(k, m, r, now, self.endpoint, self.schema) for k, m, r in rows],
            )

    def count_hits(self, hits: Counter[str]) -> None:
        """Add ``hits[key]`` free answers to each key's ``hits``."""
        if hits:
            with self._lock, self._conn:
                self._conn.executemany(
                    "UPDATE queries SET hits = hits + ? WHERE key = ?",
                    [(n, k) for k, n in hits.items()],
                )

    def entries(self, decode: Callable[[Any], Labels] | None = None) -> list[JournalEntry]:
        """Every row, oldest first; ``decode`` reads the rows of this journal's schema."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT key, max_results, response, created, paid, hits, endpoint, schema "
                "FROM queries ORDER BY created, rowid"
            ).fetchall()
        out: list[JournalEntry] = []
        for k, m, r, c, p, h, e, s in rows:
            response = json.loads(r)
            mine = decode is not None and str(s) == self.schema
            out.append(
                JournalEntry(
                    key=str(k),
                    max_results=int(m),
                    response=response,
                    created=float(c),
                    paid=bool(p),
                    hits=int(h),
                    endpoint=str(e),
                    schema=str(s),
                    decoded=decode(response) if mine and decode is not None else None,
                )
            )
        return out

    def close(self) -> None:
        with self._lock:
            self._conn.close()
