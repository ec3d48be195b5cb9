"""Adaptive Square against defended local targets: a refusal is a signal, not a stop. It gets
past Blacklight where plain Square is stopped at once, counts every query (probes, redraws,
EOT samples, the refused final check), never exceeds its budget, and a killed run resumes the
defence's store to the unbroken result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bbattack import AttackResult, CallableClassifier, Oracle, Scores
from bbattack.attacks import registry
from bbattack.attacks.checkpoint import Checkpointer, Every
from bbattack.attacks.score import adaptive
from bbattack.attacks.score._scatter import snap
from bbattack.defenses import Aaa, Blacklight, Piha, Rnd, aaa, defense_block
from bbattack.images import quantize
from bbattack.oracle import Forward, Middleware, Observation, Query, ScoresObservation
from bbattack.oracle.journal import Journal
from support import FloatArray

EASY = 1  # the colour photo (and seed) that adaptive Square gets past Blacklight with


class _Counted:
    """The tiny model, counting the images it is asked about: what a target would bill."""

    def __init__(self, model: CallableClassifier) -> None:
        self.model, self.images = model, 0

    def __call__(self, x: FloatArray) -> FloatArray:
        self.images += len(x)
        out: FloatArray = self.model(x)
        return out


def _run(
    model: Any, x: FloatArray, layers: list[Middleware], name: str = "adaptive-square",
    budget: int = 300, journal: Journal | None = None, **config: Any,
) -> tuple[AttackResult, Oracle]:  # fmt: skip
    oracle = Oracle(model, Scores(), max_queries=budget, journal=journal, middleware=layers)
    res = registry.build(name, eps=0.05, **config).run(oracle, x[EASY : EASY + 1], None, seed=1)
    return res, oracle


def test_the_registry_says_what_it_is_built_against() -> None:
    info = registry.get("adaptive-square")
    assert {"blacklight", "piha", "rnd", "aaa"} <= set(info.against)
    assert info.to_json()["against"] == list(info.against)
    assert registry.get("square").against == ()


def test_plain_square_is_stopped_and_adaptive_square_gets_past_blacklight(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray, tmp_path: Path
) -> None:
    plain, _ = _run(tiny_rgb, colour_photos, [Blacklight()], "square")
    assert plain.images[0].stop_reason == "rejected"
    assert not plain.images[0].success
    assert plain.images[0].queries <= 30
    counted = _Counted(tiny_rgb)
    model = CallableClassifier(counted, (3, 32, 32), 10, name="tiny-rgb")
    bl = Blacklight()
    with Journal(tmp_path / "j.sqlite") as journal:
        res, oracle = _run(model, colour_photos, [bl], journal=journal)
        stats = journal.stats()
    r = res.images[0]
    block = defense_block([bl])
    assert r.success
    assert block["rejected"] > 0
    # Counted exactly: the oracle, the journal and the result agree; what was billed was paid.
    assert r.queries == oracle.total_queries == stats.last_seq == bl.seen <= 300
    assert sum(r.queries_by_kind.values()) == r.queries
    assert r.queries_by_kind["probe"] > 0  # the calibration's probes
    assert stats.refused == block["rejected"] == r.lost_queries
    assert stats.paid + stats.journal + stats.refused == stats.last_seq
    assert counted.images == stats.paid


@pytest.mark.parametrize("budget", [5, 7, 20, 41])
def test_the_budget_is_never_exceeded_behind_a_defence(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray, budget: int
) -> None:
    cases: list[tuple[Middleware, int]] = [(Blacklight(), 1), (Rnd(0.02), 3)]
    for layer, eot in cases:
        res, oracle = _run(tiny_rgb, colour_photos, [layer], budget=budget, eot=eot)
        assert res.images[0].queries == oracle.total_queries <= budget


def test_eot_averages_counted_queries_against_input_noise(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray
) -> None:
    res, oracle = _run(tiny_rgb, colour_photos, [Rnd(0.02)], budget=400, eot=4)
    r = res.images[0]
    assert r.success
    assert r.queries_by_kind["init"] == 1 + 4  # the clean image once, the start image 4 times
    assert (r.queries_by_kind["line_search"] + r.queries_by_kind["probe"]) % 4 == 0
    assert r.queries == oracle.total_queries


def test_a_flipped_search_direction_gets_past_aaa(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray
) -> None:
    plain, _ = _run(tiny_rgb, colour_photos, [Aaa()], "square", budget=500)
    flipped, _ = _run(tiny_rgb, colour_photos, [Aaa()], budget=500, flip_after=10)
    assert not plain.images[0].success
    assert flipped.images[0].success


def test_aaa_with_known_parameters_gives_the_undefended_run(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray
) -> None:
    plain, _ = _run(tiny_rgb, colour_photos, [], budget=500)
    undone, _ = _run(tiny_rgb, colour_photos, [Aaa(tau=4.0, beta=0.8)], budget=500, aaa_tau=4.0)
    assert plain.images[0].success
    assert undone.images[0].success
    assert undone.images[0].queries == plain.images[0].queries
    assert np.array_equal(undone.x_adv, plain.x_adv)


class _Margin(Middleware):
    """Answers query number ``at`` with the clean answer's top class ``margin`` (in
    log-probability) above the runner-up: what a defence other than the one the attacker
    assumed may show."""

    name = "margin"

    def __init__(self, at: int, margin: float) -> None:
        self.at, self.margin, self.seen = at, margin, 0

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def handle(self, query: Query, forward: Forward) -> Observation:
        obs = forward(query.x)
        self.seen += len(query.x)
        if self.seen != self.at or not isinstance(obs, ScoresObservation):
            return obs
        z = np.log(np.maximum(np.array(obs.probs, np.float64), 1e-30))
        top, second = np.argsort(-z[0])[:2]
        z[0, top] = z[0, second] + self.margin
        p = np.exp(z - z.max(axis=1, keepdims=True))
        return ScoresObservation((p / p.sum(axis=1, keepdims=True)).astype(np.float32))

    def snapshot(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def restore(self, snap: dict[str, Any]) -> None:
        self.seen = int(snap["seen"])


def test_the_goal_is_judged_on_the_answer_as_given_not_the_undone_one(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray
) -> None:
    # Behind AAA (4, 0.8), query 4 is shown a margin of 3.602: within fits()'s float32
    # tolerance of AAA's range, and undone it is -0.0025, another top class. The loss reads the
    # undone answer; whether the goal holds, the answer as given: no success is claimed there.
    layers: list[Middleware] = [_Margin(4, 3.602), Aaa(4.0, 0.8)]
    res, oracle = _run(tiny_rgb, colour_photos, layers, budget=300, aaa_tau=4.0)
    r = res.images[0]
    assert r.stop_reason != "lost_in_quantisation"
    assert r.queries > 5  # it did not stop at the answer
    assert r.queries == oracle.total_queries <= 300


def test_an_answer_aaa_cannot_give_ends_the_undo_and_the_flips_take_over(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No AAA in front: undoing it would read every answer wrong; the first answer in a gap
    # of AAA's ranges ends that, and the run goes on as plain adaptive Square would.
    gaps: list[int] = []

    def counted(probs: FloatArray, tau: float, beta: float) -> Any:
        out = aaa.fits(probs, tau, beta)
        gaps.append(int((~out).sum()))
        return out

    monkeypatch.setattr(adaptive, "fits", counted)
    plain, _ = _run(tiny_rgb, colour_photos, [], budget=500)
    wary, oracle = _run(tiny_rgb, colour_photos, [], budget=500, aaa_tau=4.0, flip_after=10)
    assert plain.images[0].success
    assert wary.images[0].success
    assert sum(gaps) >= 1  # the undo ended on an answer in a gap
    assert wary.images[0].queries == oracle.total_queries <= 500


def test_a_silent_defence_still_shows_its_stale_answers(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray
) -> None:
    plain, _ = _run(tiny_rgb, colour_photos, [Blacklight(action="silent")], "square", budget=200)
    seen, _ = _run(tiny_rgb, colour_photos, [Blacklight(action="silent")], budget=200)
    blind, _ = _run(tiny_rgb, colour_photos, [Blacklight(action="silent")], budget=200, stale=False)
    assert not plain.images[0].success
    assert seen.images[0].success
    assert seen.images[0].lost_queries == 0  # nothing refused: the stale answers were paid
    assert not blind.images[0].success


def test_a_banned_key_ends_the_run(tiny_rgb: CallableClassifier, colour_photos: FloatArray) -> None:
    bl = Blacklight(action="ban")
    res, oracle = _run(tiny_rgb, colour_photos, [bl])
    assert res.images[0].stop_reason == "banned"
    assert bl.rejected == 1
    assert res.images[0].queries == oracle.total_queries == bl.seen


# -- kill and resume


class _Killed(Exception):  # noqa: N818 - a stand-in for SIGKILL
    pass


class _Forgetful(Blacklight):
    """Blacklight whose store did not survive the restart."""

    def restore(self, snap: dict[str, Any]) -> None:
        pass


def _attempt(
    model: CallableClassifier, x: FloatArray, d: Path, layer: Middleware, kill: int | None,
    resume: bool, **config: Any,
) -> AttackResult | None:  # fmt: skip
    journal = Journal(d / "journal.sqlite")
    journal.resume_run(1) if resume else journal.new_run()
    oracle = Oracle(model, Scores(), max_queries=120, journal=journal, middleware=[layer])

    def on_step(info: Any) -> None:
        if info.step == kill:
            raise _Killed

    attack = registry.build("adaptive-square", eps=0.05, **config)
    go = attack.resume if resume else attack.run
    try:
        return go(
            oracle, x[0:1], None, seed=2, on_step=on_step,
            checkpoints=Checkpointer(d / "ckpt", Every(steps=5)),
        )  # fmt: skip
    except _Killed:
        return None
    finally:
        journal.close()


def test_a_killed_run_resumes_past_its_refusals_with_the_defence_store(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray, tmp_path: Path
) -> None:
    a, b, c = (tmp_path / n for n in "abc")
    for p in (a, b, c):
        p.mkdir()
    whole_bl = Blacklight()
    whole = _attempt(tiny_rgb, colour_photos, a, whole_bl, None, False)
    assert whole is not None
    assert whole_bl.rejected > 5  # the run went on past refusals
    assert _attempt(tiny_rgb, colour_photos, b, Blacklight(), 60, False) is None
    with Journal(b / "journal.sqlite") as j:
        assert j.stats(1).refused > 0  # the checkpoint it resumes from is past refusals
    bl = Blacklight()
    resumed = _attempt(tiny_rgb, colour_photos, b, bl, None, True)
    assert resumed is not None
    keep = {"wall_time_s"}
    assert resumed.images[0].model_dump(exclude=keep) == whole.images[0].model_dump(exclude=keep)
    assert np.array_equal(resumed.x_adv, whole.x_adv)
    assert bl.counters() == whole_bl.counters()
    # A store lost on restart would have let other queries through: another outcome.
    assert _attempt(tiny_rgb, colour_photos, c, Blacklight(), 60, False) is None
    fresh = _attempt(tiny_rgb, colour_photos, c, _Forgetful(), None, True)
    assert fresh is not None
    assert fresh.images[0].model_dump(exclude=keep) != whole.images[0].model_dump(exclude=keep)


def test_a_resumed_run_screens_with_the_keys_it_had_sent(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray, tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    whole_layer, layer = Piha(), Piha()
    whole = _attempt(tiny_rgb, colour_photos, a, whole_layer, None, False, screen="piha")
    assert whole is not None
    assert whole.images[0].queries > 60  # the kill below is mid-run
    assert _attempt(tiny_rgb, colour_photos, b, Piha(), 40, False, screen="piha") is None
    resumed = _attempt(tiny_rgb, colour_photos, b, layer, None, True, screen="piha")
    assert resumed is not None
    keep = {"wall_time_s"}
    assert resumed.images[0].model_dump(exclude=keep) == whole.images[0].model_dump(exclude=keep)
    assert np.array_equal(resumed.x_adv, whole.x_adv)
    assert layer.counters() == whole_layer.counters()


class _Seen(Blacklight):
    """Blacklight that also keeps every image it was asked about (the test's record)."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[bytes] = []

    def flags(self, query: Any) -> Any:
        self.images += [np.asarray(x, np.float32).tobytes() for x in query.x]
        return super().flags(query)


def test_scattered_windows_never_ask_a_refused_image_again(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray
) -> None:
    # One window of the floor's size has a few whole-image sign patterns, soon all stored and
    # refused ever after; the floor's area in scattered windows is a new image every time.
    hard = np.stack([colour_photos[0]] * (EASY + 1))  # a photo neither gets past in 300
    one, spread = _Seen(), _Seen()
    _run(tiny_rgb, hard, [one], scatter="off", dither=0)
    res, oracle = _run(tiny_rgb, hard, [spread], scatter="on")
    assert len(set(one.images)) < len(one.images) // 2
    assert one.rejected > 250
    # The only image asked twice is the final check of the kept iterate.
    assert len(set(spread.images)) == len(spread.images) - 1 == oracle.total_queries - 1
    assert res.images[0].lost_queries < 20


def test_where_nothing_is_refused_the_dither_and_the_bandit_change_nothing(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray
) -> None:
    settings: list[dict[str, Any]] = [{}, {"dither": 0, "scatter": "off"}]
    runs = [_run(tiny_rgb, colour_photos, [], budget=150, **kw)[0] for kw in settings]
    assert [r.images[0].queries for r in runs] == [runs[0].images[0].queries] * 2
    assert np.array_equal(runs[0].x_adv, runs[1].x_adv)


def test_behind_blacklight_the_dither_keeps_candidates_on_the_grid_inside_the_ball(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray
) -> None:
    seen = _Seen()
    res, oracle = _run(tiny_rgb, colour_photos, [seen])
    x0 = colour_photos[EASY]
    asked = np.stack([np.frombuffer(b, np.float32).reshape(x0.shape) for b in seen.images])
    assert np.abs(asked - x0).max() <= 0.05 + 1e-6
    off_grid = np.abs(asked.astype(np.float64) * 255 - np.rint(asked.astype(np.float64) * 255))
    assert off_grid.max() < 1e-3  # 8-bit values: what a label API is sent
    clean = np.broadcast_to(x0, asked.shape).astype(np.float32)
    eps = np.full(len(asked), 0.05)
    hi, lo = (quantize((clean + e).astype(np.float32), clean, eps) for e in (0.05, -0.05))
    dithered = (snap(asked, clean, hi, lo) != asked).any(axis=(1, 2, 3))
    assert dithered.sum() > 10  # after the first refusal, candidates are dithered
    assert res.images[0].queries == oracle.total_queries == len(seen.images)
