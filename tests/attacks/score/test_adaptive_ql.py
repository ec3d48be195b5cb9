"""Adaptive NES (``adaptive-ql``) against defended local targets: plain QL is stopped by its
first refused batch of samples; the adaptive one calibrates its sampling radius, drops refused
samples and goes on, counting every query and never passing its budget."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bbattack import AttackResult, CallableClassifier, Oracle, Scores
from bbattack.attacks import registry
from bbattack.attacks.base import BoolArray
from bbattack.attacks.score._refusals import ask_each
from bbattack.defenses import Blacklight, Piha, defense_block
from bbattack.oracle import Middleware, QueryKind
from bbattack.oracle.journal import Journal
from support import FloatArray, IntArray

EASY = 4  # the colour photo the toy model gives up soonest


def _run(
    model: Any, x: FloatArray, layers: list[Middleware], name: str = "adaptive-ql",
    budget: int = 300, journal: Journal | None = None, rows: slice = slice(EASY, EASY + 1),
    **config: Any,
) -> tuple[AttackResult, Oracle]:  # fmt: skip
    oracle = Oracle(model, Scores(), max_queries=budget, journal=journal, middleware=layers)
    res = registry.build(name, eps=0.05, **config).run(oracle, x[rows], None, seed=1)
    return res, oracle


def test_the_registry_says_what_it_is_built_against() -> None:
    info = registry.get("adaptive-ql")
    assert {"blacklight", "piha", "stateful"} <= set(info.against)
    assert info.views == ("scores",)


def test_without_calibration_or_a_defence_it_walks_as_the_ql_attack(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray
) -> None:
    two = slice(1, 3)
    plain, _ = _run(tiny_rgb, colour_photos, [], "ql", budget=600, rows=two)
    same, _ = _run(tiny_rgb, colour_photos, [], budget=600, rows=two, calibrate=False)
    # The same draws and steps; only the samples' calls differ (one image each, not one
    # batch), which may move the scores in their last bits on some CPUs.
    for a, b in zip(plain.images, same.images, strict=True):
        assert a.success == b.success
        assert a.queries_by_kind.keys() == b.queries_by_kind.keys()
        assert abs(a.queries - b.queries) <= 0.1 * a.queries
    assert float(np.abs(plain.x_adv - same.x_adv).mean()) < 0.5 / 255  # a few signs at most


@pytest.mark.parametrize("layer", [Blacklight, Piha])
def test_plain_ql_is_stopped_and_adaptive_ql_gets_past(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray, tmp_path: Path, layer: type[Any]
) -> None:
    plain, _ = _run(tiny_rgb, colour_photos, [layer()], "ql")
    assert plain.images[0].stop_reason == "rejected"
    assert plain.images[0].queries <= 60  # the clean image, then one refused batch of samples
    defence = layer()
    with Journal(tmp_path / "j.sqlite") as journal:
        res, oracle = _run(tiny_rgb, colour_photos, [defence], journal=journal)
        stats = journal.stats()
    r = res.images[0]
    assert r.success
    assert r.queries_by_kind["probe"] > 0  # the radius ladder's probes
    block = defense_block([defence])
    assert block["rejected"] == r.lost_queries == stats.refused > 0
    assert r.queries == oracle.total_queries == stats.last_seq <= 300
    assert sum(r.queries_by_kind.values()) == r.queries


@pytest.mark.parametrize("budget", [5, 7, 52, 53, 120])
def test_the_budget_is_never_exceeded_behind_a_defence(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray, budget: int
) -> None:
    res, oracle = _run(tiny_rgb, colour_photos, [Blacklight()], budget=budget, rows=slice(0, 2))
    assert sum(r.queries for r in res.images) == oracle.total_queries
    assert all(r.queries <= budget for r in res.images)


def test_a_silent_defence_still_shows_its_stale_answers(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray
) -> None:
    seen, _ = _run(tiny_rgb, colour_photos, [Blacklight(action="silent")])
    r = seen.images[0]
    assert r.success
    assert r.lost_queries == 0  # nothing refused: the stale answers were paid and noticed
    assert r.queries_by_kind["probe"] > 0


def test_a_banned_key_ends_the_run(tiny_rgb: CallableClassifier, colour_photos: FloatArray) -> None:
    bl = Blacklight(action="ban")
    res, oracle = _run(tiny_rgb, colour_photos, [bl])
    assert res.images[0].stop_reason == "banned"
    assert res.images[0].queries == oracle.total_queries == bl.seen


@dataclass
class _Seen:
    prev: FloatArray
    answered: BoolArray
    rejected: IntArray


def test_a_silent_answer_given_to_another_image_is_stale_too(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray
) -> None:
    """A silent defence answers a flagged query with the key's last unflagged answer: in a
    batch, often another image's, which the image's own last answer would not show."""
    oracle = Oracle(tiny_rgb, Scores(), max_queries=10, middleware=[Blacklight(action="silent")])
    ids = oracle.register(2)
    x = colour_photos[[0, 3]]
    seen = _Seen(np.zeros((2, 10), np.float32), np.zeros(2, bool), np.zeros(2, np.int64))

    def answered(r: int) -> bool:
        ok, _ = ask_each(oracle, ids, np.array([r]), x[r : r + 1], [QueryKind.PROBE], seen)
        return bool(ok[0])

    assert answered(1)
    assert answered(0)  # the key's last answer is now image 0's
    assert not answered(1)  # a repeat, flagged: given image 0's scores
    assert seen.rejected.tolist() == [0, 1]
    # One image's samples in one call (as NES asks them): each refusal counted.
    ok, _ = ask_each(oracle, ids, np.array([1, 1]), x[[1, 1]], [QueryKind.GRADIENT] * 2, seen)
    assert not ok.any()
    assert seen.rejected.tolist() == [0, 3]


def test_tiled_samples_are_constant_on_each_tile_and_counted(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray
) -> None:
    from bbattack.attacks._nes import tiled_normal

    oracle = Oracle(tiny_rgb, Scores(), max_queries=10)
    attack = registry.build("adaptive-ql", eps=0.05, tile=8)
    res = attack.run(oracle, colour_photos[:1], None, seed=0)
    assert res.images[0].queries == oracle.total_queries <= 10

    from types import SimpleNamespace

    state = SimpleNamespace(
        x=colour_photos[:2], rngs=[torch.Generator().manual_seed(i) for i in range(2)]
    )
    u = tiled_normal(state, np.arange(2), 3, 8)  # type: ignore[arg-type]
    assert u.shape == (2, 3, 3, 32, 32)
    blocks = u.reshape(2, 3, 3, 4, 8, 4, 8)
    assert np.array_equal(blocks, np.broadcast_to(blocks[:, :, :, :, :1, :, :1], blocks.shape))
