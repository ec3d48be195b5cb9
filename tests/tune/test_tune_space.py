"""The search spaces and the TOML `bbattack tune` writes: every point of every space builds
its attack (each knob is a real config field with a valid range), and a written grid reads
back as the same grid."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from bbattack.attacks import registry
from bbattack.bench.config import parse_config
from bbattack.errors import UserInputError
from bbattack.tune import SPACES, Knob, TuneSpec, grid_data, score_cases, search_space
from bbattack.tune.toml import dumps


def _corners(knob: Knob) -> list[Any]:
    if knob.kind == "choice":
        return list(knob.choices)
    if knob.kind == "int":
        return [int(knob.low), int(knob.high)]
    return [knob.low, knob.high]


@pytest.mark.parametrize("attack", sorted(SPACES))
def test_every_corner_of_every_space_builds(attack: str) -> None:
    for knob in SPACES[attack]:
        for v in _corners(knob):
            registry.build(attack, **{knob.name: v})  # a ValidationError fails the test
    corners = {k.name: _corners(k)[-1] for k in SPACES[attack]}
    registry.build(attack, **corners)  # all at once: no field constrains another


def test_knobs_follow_the_goal_and_threat() -> None:
    targeted = {k.name for k in search_space("square", "targeted", "ql")}
    untargeted = {k.name for k in search_space("square", "untargeted", "ql")}
    assert "p_init" in targeted
    assert "p_init" not in untargeted
    assert "p_init_untargeted" in untargeted
    assert "delta" in {k.name for k in search_space("transfer", "targeted", "pi")}
    with pytest.raises(UserInputError, match="no search space"):
        search_space("ta-square", "targeted", "ql")


def test_a_trial_grid_round_trips_and_names_the_split() -> None:
    spec = TuneSpec(attack="pi-square", threat="pi", goal="targeted", budget=20_000, limit=8)
    data = grid_data(spec, {"p_init": 0.031, "delta": 3, "max_delta": 20, "patience": 7})
    assert data["images"] == {"split": "tuning", "min_confidence": 0.5, "limit": 8}
    text = dumps(data, header="a header\nof two lines")
    assert tomllib.loads(text) == data
    assert parse_config(tomllib.loads(text)).digest() == parse_config(data).digest()


def test_failures_count_at_the_budget() -> None:
    cases: list[dict[str, Any]] = [
        {"success": True, "queries": 12, "queries_at_success": 10, "budget": 100},
        {"success": True, "queries": 31, "queries_at_success": None, "budget": 100},
        {"success": False, "queries": 100, "queries_at_success": None, "budget": 100},
    ]
    s = score_cases(cases)
    assert (s.median, s.successes, s.cases) == (31.0, 2, 3)
    assert s.mean == pytest.approx((10 + 31 + 100) / 3)
