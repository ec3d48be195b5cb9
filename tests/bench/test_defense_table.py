"""The report's defences table: a defended case is paired with the same attack's undefended
case, and each row says how soon the defence caught the attack, against the queries the
attack needed undefended, with the successes on both sides and the benign false positives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bbattack.bench.config import defense_stack
from bbattack.bench.defense_table import benign_rates, defense_cells, defense_rows
from bbattack.bench.report import _benign
from bbattack.errors import UserInputError

BL = defense_stack("blacklight")


def _case(image: str, defense: list[dict[str, Any]] | None, **kw: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"defense": defense} if defense else {}
    block = kw.pop("block", None)
    c = {
        "attack": "square",
        "threat": "ql",
        "k": 1,
        "norm": "linf",
        "eps": 0.05,
        "budget": 2000,
        "image": image,
        "target_id": -1,
        "seed": 0,
        "params": params,
        "provenance": {"defense": block} if block else {},
        **kw,
    }
    return c


def _cases() -> list[dict[str, Any]]:
    caught = {"rejected": 1, "first_rejected_at": 4, "banned": False}
    flagged = {"rejected": 0, "first_flagged_at": 30, "banned": True}
    return [
        _case("a", None, success=True, queries=200, queries_at_success=200),
        _case("b", None, success=False, queries=2000, queries_at_success=None),
        _case("a", BL, success=False, queries=4, block=caught),
        _case("b", BL, success=True, queries=900, queries_at_success=900, block=flagged),
        _case("c", BL, success=True, queries=50, queries_at_success=50, block={"rejected": 0}),
    ]


def test_a_defended_case_is_paired_with_its_undefended_twin() -> None:
    (row,) = defense_rows(_cases())
    assert (row.defense, row.attack, row.n) == ("blacklight", "square", 3)
    assert row.detected == 2  # a refusal (a) and a flag (b); c went unseen
    assert row.median_first_detection == 17  # median of 4 and 30
    # 4 of the 200 queries a needed undefended; 30 of b's whole budget (it failed undefended).
    assert row.median_share_of_undefended == pytest.approx((4 / 200 + 30 / 2000) / 2)
    assert (row.successes, row.undefended_successes, row.undefended_n) == (2, 1, 2)
    assert (row.rejected, row.queries, row.banned) == (1, 954, 1)
    cells = defense_cells([row])[0]
    assert cells[3:5] == ["2/3", "17"]
    assert cells[-1] == "—"  # no benign figures given


def test_no_defence_in_the_grid_gives_no_rows() -> None:
    assert defense_rows([c for c in _cases() if not c["params"]]) == []


def test_benign_rates_match_rows_by_their_defence(tmp_path: Path) -> None:
    raw = {"detectors": {"x": {"spec": "blacklight", "fpr_without_resubmissions": 0.0168}}}
    path = tmp_path / "fpr.json"
    path.write_text(json.dumps(raw))
    rates = _benign(path)
    assert rates == benign_rates(raw)
    (row,) = defense_rows(_cases(), rates)
    assert row.benign_fpr == pytest.approx(0.0168)
    assert defense_cells([row])[0][-1] == "1.68%"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ("[]", "not the JSON"),
        ("{}", "no 'detectors'"),
        ('{"detectors": [1]}', "no 'detectors'"),
        ('{"detectors": {"b": {"spec": "blacklight"}}}', "numeric"),
        (
            '{"detectors": {"b": {"spec": "blacklight", "fpr_without_resubmissions": "x"}}}',
            "numeric",
        ),
        ('{"detectors": {"b": {"spec": "shield", "fpr_without_resubmissions": 0.1}}}', "'b'"),
    ],
)
def test_a_bad_benign_file_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "fpr.json"
    path.write_text(text)
    with pytest.raises(UserInputError, match=message):
        _benign(path)
