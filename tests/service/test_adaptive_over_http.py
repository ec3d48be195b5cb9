"""Issue 29's end-to-end check: ``bbattack serve --defense blacklight`` in front of a model,
attacked with ``bbattack attack --endpoint`` over the Hugging Face schema asked for every
class (``--threat ql``: the score vector over HTTP). Plain Square is refused within its first
queries and stops; adaptive Square (OARS) then gets through on the same service, whose store
still holds the first run's queries. Every query counts once: what the service billed =
result.json's paid queries = the journal's paid and refused rows; the adaptive run replays."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from wire_support import colour_classifier

from bbattack.cli import main
from bbattack.defenses import Blacklight
from bbattack.service import create_app
from bbattack.service.runner import serve_in_thread

KEY = "hf_defended_0001"
# The astronaut's mean red is 0.14 above its mean green: within reach of eps = 0.1 on each
# (the tiny model's logits are 10 x the channel means), out of reach of small windows.
EPS = "0.1"


def _attack(url: str, astronaut: str, name: str, out: Path, journal: Path) -> int:
    return main(
        [
            *["attack", astronaut, "--endpoint", f"{url}/models/colour", "--schema", "hf"],
            *["--api-key", KEY, "--threat", "ql", "--max-results", "1000", "--untargeted"],
            *["--eps", EPS, "--attack", name, "--max-queries", "300"],
            *["--journal", str(journal), "--out", str(out)],
        ]
    )


def _rows(journal: Path, run: int) -> dict[str, int]:
    """A run's journal rows by status (paid, refused, journal: answered from the file)."""
    with sqlite3.connect(journal) as db:
        got = db.execute(
            "SELECT status, COUNT(*) FROM queries WHERE run = ? GROUP BY status", (run,)
        ).fetchall()
    return {str(s): int(n) for s, n in got}


def _result(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "result.json").read_text())
    return doc


def test_plain_square_is_refused_then_adaptive_square_gets_through_billed_as_paid(
    astronaut: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blacklight = Blacklight(hash="mix64", window=50)  # the fast hash, as the other tests
    app = create_app(colour_classifier(), api_keys=[KEY], schema="hf", defenses=[blacklight])
    # One journal for both runs: the photo's clean query (which the defence now remembers)
    # is answered from the first run's row, free, instead of being refused.
    journal = tmp_path / "queries.sqlite"
    with serve_in_thread(app) as url:
        assert _attack(url, astronaut, "square", tmp_path / "plain", journal) == 3
        assert "(rejected)" in capsys.readouterr().err
        billed_plain = int(app.state.usage[KEY])
        rc = _attack(url, astronaut, "adaptive-square", tmp_path / "adaptive", journal)
        assert rc == 0, capsys.readouterr().err
        billed_adaptive = int(app.state.usage[KEY]) - billed_plain
    plain, adaptive = _result(tmp_path / "plain"), _result(tmp_path / "adaptive")
    assert plain["stop_reason"] == "rejected"
    assert not plain["success"]
    assert plain["queries"] <= 48  # the first few dozen
    assert adaptive["stop_reason"] == "success"
    assert adaptive["success"]
    assert adaptive["remote"]["refused"] >= 1  # refused on the way, and went on
    for doc, billed in ((plain, billed_plain), (adaptive, billed_adaptive)):
        rows = _rows(journal, int(doc["provenance"]["journal"]["run"]))
        paid = doc["remote"]["paid_queries"]
        assert billed == paid == rows["paid"] + rows.get("refused", 0)
        assert doc["remote"]["refused"] == rows.get("refused", 0)
        assert doc["remote"]["cached_queries"] == rows.get("journal", 0)
        assert doc["queries"] == paid + doc["remote"]["cached_queries"]
    assert blacklight.rejected == plain["remote"]["refused"] + adaptive["remote"]["refused"]
    assert main(["replay", str(tmp_path / "adaptive")]) == 0, capsys.readouterr().err
