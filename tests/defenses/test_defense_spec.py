"""Defence specs: typed, checked, one line for whatever is wrong."""

from __future__ import annotations

import pytest

from bbattack.defenses import Blacklight, Rnd, build, from_config, parse_spec, parse_specs
from bbattack.errors import UserInputError


def test_specs_are_parsed_typed_and_built() -> None:
    assert parse_spec("blacklight") == {"name": "blacklight"}
    spec = parse_spec("blacklight:action=reject,T=25,window=50,reset=none")
    assert spec == {"name": "blacklight", "action": "reject", "threshold": 25, "window": 50,
                    "reset": None}  # fmt: skip
    layer = build(spec)
    assert isinstance(layer, Blacklight)
    assert layer.window == 50
    assert layer.threshold == 25
    rnd = build(parse_spec("rnd:nu=0.02"))
    assert isinstance(rnd, Rnd)
    assert rnd.nu == 0.02
    # What a run's config records rebuilds the same defence.
    again = from_config([layer.describe()])[0]
    assert again.describe() == layer.describe()
    assert [s["name"] for s in parse_specs(["piha", "stateful:K=20", "aaa:tau=2"])] == [
        "piha", "stateful", "aaa",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("shield", "choose one of blacklight, piha, stateful, rnd, aaa"),
        ("blacklight:color=red", "KEY one of: step, window"),
        ("blacklight:T", "KEY one of"),
        ("blacklight:T=many", "T"),
        ("blacklight:T=60", "T <= S"),
        ("blacklight:action=shout", "action"),
        ("rnd:nu=-1", "nu"),
        ("piha:threshold=2", "threshold"),
        ("stateful:k=100,history=10", "history"),
        ("aaa:beta=1", "beta"),
    ],
)
def test_bad_specs_are_one_line(spec: str, says: str) -> None:
    with pytest.raises(UserInputError, match=says) as e:
        parse_spec(spec)
    assert "\n" not in str(e.value)
