"""What a detector does on detection (reject, ban, silent), and that the oracle, the journal
and result.json's defence block count the same queries; a resumed run resumes the store."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bbattack import AttackResult, CallableClassifier, Oracle, Scores, TopK
from bbattack.attacks import registry
from bbattack.attacks.checkpoint import Checkpointer, Every
from bbattack.defenses import (
    Blacklight,
    Detector,
    KeyBanned,
    QueryRejected,
    Stateful,
    defense_block,
    screen,
)
from bbattack.errors import TARGET_DOWN_REASONS, UserInputError
from bbattack.oracle import Middleware, QueryKind, ScoresObservation, TopKObservation
from bbattack.oracle.journal import Journal
from support import FloatArray


def _run(
    model: CallableClassifier,
    x: FloatArray,
    layers: list[Middleware],
    journal: Journal | None = None,
    budget: int = 200,
    key: str = "local",
) -> tuple[AttackResult, Oracle]:
    oracle = Oracle(
        model, Scores(), max_queries=budget, journal=journal, middleware=layers, key=key
    )
    res = registry.build("square", eps=0.05).run(oracle, x[:1], None, seed=1)
    return res, oracle


def test_reject_stops_a_plain_attack_and_every_count_agrees(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray, tmp_path: Path
) -> None:
    assert {"rejected", "banned"} <= TARGET_DOWN_REASONS
    bl = Blacklight()
    with Journal(tmp_path / "j.sqlite") as journal:
        res, oracle = _run(tiny_rgb, colour_photos, [bl], journal)
        stats = journal.stats()
    r = res.images[0]
    block = defense_block([bl])
    assert r.stop_reason == "rejected"
    assert not r.success
    assert block["rejected"] == 1 == r.lost_queries == stats.lost
    assert block["first_rejected_at"] == r.queries == oracle.total_queries
    assert stats.last_seq == r.queries == stats.paid + stats.lost  # a journal row per query
    assert block["banned"] is False
    assert block["layers"][0]["name"] == "blacklight"
    assert block["layers"][0]["threshold"] == 25


def test_ban_kills_the_key_and_every_later_query_is_refused_and_counted(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray, tmp_path: Path
) -> None:
    bl = Blacklight(action="ban")
    with Journal(tmp_path / "j.sqlite") as journal:
        res, oracle = _run(tiny_rgb, colour_photos, [bl], journal, key="alice")
        assert res.images[0].stop_reason == "banned"
        ids = oracle.register(1)
        with pytest.raises(KeyBanned):  # another photo, not like anything stored: still refused
            oracle.query(colour_photos[5:6], ids, QueryKind.INIT)
        stats = journal.stats()
    block = defense_block([bl])
    assert block["banned"] is True
    assert bl.banned == {"alice"}
    assert block["rejected"] == 2 == stats.lost
    assert stats.last_seq == oracle.total_queries == res.images[0].queries + 1
    # Account-oblivious store, per-key ban: another key is refused only for what it asks.
    other = Oracle(tiny_rgb, Scores(), middleware=[bl], key="bob")
    assert len(other.query(colour_photos[6:7], other.register(1), QueryKind.INIT)) == 1


def test_silent_answers_the_last_unflagged_answer_and_refuses_nothing(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray, tmp_path: Path
) -> None:
    bl = Blacklight(action="silent")
    with Journal(tmp_path / "j.sqlite") as journal:
        res, _oracle = _run(tiny_rgb, colour_photos, [bl], journal, budget=60)
        stats = journal.stats()
    r = res.images[0]
    assert r.stop_reason != "rejected"
    assert r.lost_queries == 0
    assert bl.flagged > 50
    assert bl.rejected == 0
    assert stats.last_seq == r.queries == stats.paid + stats.journal  # all answered, on record
    # What the attack saw after the first flag: the same answer again and again.
    oracle2 = Oracle(tiny_rgb, Scores(), middleware=[Blacklight(action="silent")])
    ids = oracle2.register(1)
    first = oracle2.query(colour_photos[:1], ids, QueryKind.INIT)
    bright = np.clip(colour_photos[:1] + 2 / 255, 0, 1).astype(np.float32)  # near-duplicate
    again = oracle2.query(bright, ids, QueryKind.INIT)
    assert isinstance(first, ScoresObservation)
    assert isinstance(again, ScoresObservation)
    assert np.array_equal(first.probs, again.probs)
    assert not np.array_equal(tiny_rgb(bright), first.probs)


def _twice(
    model: CallableClassifier, layer: Middleware, x: FloatArray, view: Any = None
) -> tuple[Any, Any]:
    """The answers to ``x`` and to a near-duplicate of it (flagged) through ``layer``."""
    oracle = Oracle(model, view or Scores(), middleware=[layer])
    ids = oracle.register(1)
    first = oracle.query(x, ids, QueryKind.INIT)
    bright = np.clip(x + 2 / 255, 0, 1).astype(np.float32)
    return first, oracle.query(bright, ids, QueryKind.INIT)


def test_silent_noise_jitters_the_stale_answer_the_same_way_every_time(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray
) -> None:
    first, again = _twice(tiny_rgb, Blacklight(action="silent", noise=0.05), colour_photos[:1])
    assert isinstance(first, ScoresObservation)
    assert isinstance(again, ScoresObservation)
    assert not np.array_equal(first.probs, again.probs)  # no bit-identical trace
    assert np.allclose(again.probs, first.probs, rtol=0.3)  # the stale answer, jittered
    assert again.probs.sum() == pytest.approx(1.0, abs=1e-5)
    _, replayed = _twice(tiny_rgb, Blacklight(action="silent", noise=0.05), colour_photos[:1])
    assert np.array_equal(replayed.probs, again.probs)  # a replay is answered the same


def test_silent_noise_re_ranks_a_top_k_answer(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray
) -> None:
    layer = Blacklight(action="silent", noise=1.0)
    first, again = _twice(tiny_rgb, layer, colour_photos[:1], TopK(5))
    assert isinstance(again, TopKObservation)
    assert np.all(np.diff(again.scores[0]) <= 0)  # still ranked
    assert set(again.labels[0]) == set(first.labels[0])
    assert not np.array_equal(again.scores, first.scores)


@pytest.mark.parametrize(
    ("kw", "why"),
    [({"noise": 0.1}, "noise needs action=silent"), ({"noise": 2.0, "action": "silent"}, "[0, 1]")],
)
def test_noise_is_checked(kw: dict[str, Any], why: str) -> None:
    with pytest.raises(UserInputError, match=re.escape(why)):
        Blacklight(**kw)


def test_stateful_bans_the_key_and_clears_its_history(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray
) -> None:
    st = Stateful(k=10)
    res, _ = _run(tiny_rgb, colour_photos, [st], key="mallory")
    assert res.images[0].stop_reason == "banned"
    assert st.banned == {"mallory"}
    assert "mallory" not in st.snapshot()["held"]
    assert st.first_rejected_at is not None
    assert st.first_rejected_at <= 40


def test_screen_runs_a_stack_outside_an_oracle(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray
) -> None:
    layers: list[Middleware] = [Blacklight()]

    def forward(x: FloatArray) -> ScoresObservation:
        return ScoresObservation(tiny_rgb(x))

    assert len(screen(layers, colour_photos[:1], forward, Scores(), key="k")) == 1
    with pytest.raises(QueryRejected):
        screen(layers, colour_photos[:1], forward, Scores(), key="k")


# -- kill and resume


class _Killed(Exception):  # noqa: N818 - a stand-in for SIGKILL
    pass


class _Forgetful(Stateful):
    """Stateful detection whose history did not survive the restart."""

    def restore(self, snap: dict[str, Any]) -> None:
        pass


def _attempt(
    model: CallableClassifier, x: FloatArray, d: Path, det: Detector, kill: int | None,
    resume: bool,
) -> AttackResult | None:  # fmt: skip
    journal = Journal(d / "journal.sqlite")
    journal.resume_run(1) if resume else journal.new_run()
    oracle = Oracle(model, Scores(), max_queries=200, journal=journal, middleware=[det])

    def on_step(info: Any) -> None:
        if info.step == kill:
            raise _Killed

    attack = registry.build("square", eps=0.05)
    go = attack.resume if resume else attack.run
    try:
        return go(
            oracle, x[:1], None, seed=3, on_step=on_step,
            checkpoints=Checkpointer(d / "ckpt", Every(steps=2)),
        )  # fmt: skip
    except _Killed:
        return None
    finally:
        journal.close()


def test_kill_and_resume_resumes_the_defence_state(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray, tmp_path: Path
) -> None:
    a, b, c = (tmp_path / n for n in "abc")
    for p in (a, b, c):
        p.mkdir()
    whole_det = Stateful(k=10, action="reject")
    whole = _attempt(tiny_rgb, colour_photos, a, whole_det, None, False)
    assert whole is not None
    assert whole.images[0].stop_reason == "rejected"
    assert _attempt(tiny_rgb, colour_photos, b, Stateful(k=10, action="reject"), 6, False) is None
    det = Stateful(k=10, action="reject")
    resumed = _attempt(tiny_rgb, colour_photos, b, det, None, True)
    assert resumed is not None
    keep = {"wall_time_s"}
    assert resumed.images[0].model_dump(exclude=keep) == whole.images[0].model_dump(exclude=keep)
    assert np.array_equal(resumed.x_adv, whole.x_adv)
    assert det.counters() == whole_det.counters()
    # A history lost on restart would have let the attack run on longer.
    assert _attempt(tiny_rgb, colour_photos, c, Stateful(k=10, action="reject"), 6, False) is None
    fresh = _attempt(tiny_rgb, colour_photos, c, _Forgetful(k=10, action="reject"), None, True)
    assert fresh is not None
    assert fresh.images[0].queries > whole.images[0].queries
