"""Refused queries stay on the journal's tape: a batch a defence refused is recorded as
``refused`` (with the error), a resume keeps it and meets the same refusal, a replay plays it
back; a journal of the previous format (2, no ``refused``) still opens, and a writer migrates
it in place."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bbattack import CallableClassifier, Oracle, Scores
from bbattack.errors import KeyBanned, QueryRejected
from bbattack.oracle import Forward, Middleware, Observation, Query, QueryKind
from bbattack.oracle._journal_db import JOURNAL_FORMAT
from bbattack.oracle.journal import Journal, JournalError
from bbattack.oracle.replay import ReplayTarget, check_chain
from support import FloatArray

SHAPE = (3, 4, 4)


def _model() -> CallableClassifier:
    w = np.random.default_rng(0).standard_normal((48, 5)).astype(np.float32)
    return CallableClassifier(lambda x: x.reshape(len(x), -1) @ w, SHAPE, 5, name="lin")


class _EveryThird(Middleware):
    """Refuses every third batch it sees (a toy detector with state)."""

    name = "every-third"

    def __init__(self, ban_at: int | None = None) -> None:
        self.seen, self.ban_at = 0, ban_at

    def handle(self, query: Query, forward: Forward) -> Observation:
        self.seen += 1
        if self.ban_at is not None and self.seen >= self.ban_at:
            query.refused(query.x, KeyBanned("banned", self.name))
        if self.seen % 3 == 0:
            query.refused(query.x, QueryRejected("every-third: query rejected", self.name))
        return forward(query.x)

    def snapshot(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def restore(self, snap: dict[str, Any]) -> None:
        self.seen = int(snap["seen"])


def _images(n: int, seed: int = 1) -> FloatArray:
    return np.random.default_rng(seed).random((n, *SHAPE)).astype(np.float32)


def _ask(oracle: Oracle, ids: Any, x: FloatArray) -> list[str]:
    """Each batch of two rows: 'ok' or the refusal's stop reason."""
    out = []
    for i in range(0, len(x), 2):
        try:
            oracle.query(x[i : i + 2], ids[:2], QueryKind.LINE_SEARCH)
            out.append("ok")
        except QueryRejected as e:
            out.append(e.stop_reason)
    return out


def test_a_refusal_is_recorded_as_refused_and_counted_as_lost(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        oracle = Oracle(_model(), Scores(), journal=journal, middleware=[_EveryThird()])
        ids = oracle.register(2)
        assert _ask(oracle, ids, _images(12)) == ["ok", "ok", "rejected"] * 2
        stats = journal.stats()
    assert (stats.paid, stats.refused, stats.lost, stats.last_seq) == (8, 4, 4, 12)
    assert stats.as_dict()["refused"] == 4
    assert oracle.total_queries == 12
    assert sum(oracle.lost_queries(int(i)) for i in ids) == 4
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        rows = db.execute("SELECT seq, status, error FROM queries WHERE status = 'refused'")
        found = [(int(s), str(e)) for s, _, e in rows]
    assert found == [(s, "rejected: every-third: query rejected") for s in (5, 6, 11, 12)]
    assert check_chain(str(tmp_path / "j.sqlite"), 1).rows == 12


def test_a_resume_keeps_the_refusals_and_meets_them_again(tmp_path: Path) -> None:
    path, x = tmp_path / "j.sqlite", _images(12)
    with Journal(path) as journal:
        oracle = Oracle(_model(), Scores(), journal=journal, middleware=[_EveryThird()])
        whole = _ask(oracle, oracle.register(2), x)
    # Resume from the start: every row is on the tape, past both refusals; nothing is paid.
    with Journal(path) as journal:
        journal.resume_run(1)
        assert journal.stats().last_seq == 12  # nothing dropped after the first refusal
        det = _EveryThird()
        oracle = Oracle(_model(), Scores(), journal=journal, middleware=[det])
        assert _ask(oracle, oracle.register(2), x) == whole
        stats = journal.stats()
    assert (stats.paid, stats.refused, stats.last_seq) == (8, 4, 12)
    # A replay plays the refusals back the same way.
    with Journal(path, read_only=True) as journal:
        journal.replay_run(1)
        oracle = Oracle(
            ReplayTarget(journal, 1), Scores(), journal=journal, middleware=[_EveryThird()]
        )
        assert _ask(oracle, oracle.register(2), x) == whole


def test_a_defence_that_now_answers_otherwise_is_an_error_or_the_recorded_refusal(
    tmp_path: Path,
) -> None:
    path, x = tmp_path / "j.sqlite", _images(6)
    with Journal(path) as journal:
        oracle = Oracle(_model(), Scores(), journal=journal, middleware=[_EveryThird()])
        _ask(oracle, oracle.register(2), x)
    # A defence that refuses what the recorded run was answered: the journal says so.
    with Journal(path) as journal:
        journal.resume_run(1)
        oracle = Oracle(_model(), Scores(), journal=journal, middleware=[_EveryThird(ban_at=1)])
        with pytest.raises(JournalError, match="refused by a defence now and paid"):
            oracle.query(x[:2], oracle.register(2), QueryKind.LINE_SEARCH)
    # No defence now (a remote one refused): the tape's refusal comes back, rebuilt.
    with Journal(path) as journal:
        journal.resume_run(1)
        oracle = Oracle(_model(), Scores(), journal=journal)
        assert _ask(oracle, oracle.register(2), x) == ["ok", "ok", "rejected"]


def test_a_refusal_from_the_target_itself_is_kept_too(tmp_path: Path) -> None:
    """A defended API's refusal (a QueryRejected from the target) is an answer: 'refused'."""
    calls = [0]

    def logits(x: FloatArray) -> FloatArray:
        calls[0] += 1
        if calls[0] == 2:
            raise KeyBanned("the API banned the key")
        return np.zeros((len(x), 5), np.float32)

    x = _images(6)
    with Journal(tmp_path / "j.sqlite") as journal:
        oracle = Oracle(CallableClassifier(logits, SHAPE, 5, name="api"), Scores(), journal=journal)
        assert _ask(oracle, oracle.register(2), x[:4]) == ["ok", "banned"]
        assert journal.stats().refused == 2
    with Journal(tmp_path / "j.sqlite") as journal:
        journal.resume_run(1)
        oracle = Oracle(CallableClassifier(logits, SHAPE, 5, name="api"), Scores(), journal=journal)
        assert _ask(oracle, oracle.register(2), x[:4]) == ["ok", "banned"]
    assert calls[0] == 2  # both answered from the tape on resume


def _as_format_2(path: Path) -> None:
    """Rewrite a journal as format 2 wrote it: no 'refused' in the status check."""
    with sqlite3.connect(path) as db:
        sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'queries'").fetchone()[0]
        old = sql.replace(", 'refused'", "")
        db.execute("ALTER TABLE queries RENAME TO q3")
        db.execute(old)
        db.execute("INSERT INTO queries SELECT * FROM q3")
        db.execute("DROP TABLE q3")
        db.execute("CREATE INDEX queries_digest ON queries(digest)")
        db.execute("PRAGMA user_version=2")


def test_a_journal_of_format_2_opens_and_is_migrated_on_write(tmp_path: Path) -> None:
    path, x = tmp_path / "j.sqlite", _images(4)
    with Journal(path) as journal:
        oracle = Oracle(_model(), Scores(), journal=journal)
        _ask(oracle, oracle.register(2), x)
        head = journal.chain_head()
    _as_format_2(path)
    with sqlite3.connect(path) as db, pytest.raises(sqlite3.IntegrityError):
        db.execute(
            "INSERT INTO queries VALUES (1, 99, 0, 'init', 'd', NULL, NULL, 0, 'refused', NULL, '')"
        )
    with Journal(path, read_only=True) as journal:  # read as it is
        assert journal.stats(1).paid == 4
    assert check_chain(str(path), 1).head == head
    with Journal(path) as journal:  # a writer migrates it, rows and chain unchanged
        journal.resume_run(1)
        oracle = Oracle(_model(), Scores(), journal=journal, middleware=[_EveryThird()])
        ids = oracle.register(2)
        assert _ask(oracle, ids, np.concatenate([x, _images(2, seed=5)])) == [
            "ok",
            "ok",
            "rejected",
        ]
        assert journal.stats().refused == 2
    with sqlite3.connect(path) as db:
        assert int(db.execute("PRAGMA user_version").fetchone()[0]) == JOURNAL_FORMAT
        assert (
            db.execute(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'queries_digest'"
            ).fetchone()[0]
            == 1
        )
    assert check_chain(str(path), 1).rows == 6
