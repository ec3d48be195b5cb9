"""``bbattack attack --defense``: a local model behind a defence; result.json's defence block,
the journal and the result count the same queries, and the run replays."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

import bbattack.cli.attack as cli_attack
from bbattack.cli import main
from bbattack.images import bundled_photos
from crash_driver import colour_model


@pytest.fixture
def photo(monkeypatch: pytest.MonkeyPatch) -> str:
    model = colour_model()
    monkeypatch.setattr(cli_attack, "load_model", lambda name="lite0", backend="auto": model)
    found = bundled_photos()
    if "astronaut" not in found:
        pytest.skip("scikit-image's astronaut photo is not installed")
    return str(found["astronaut"])


def test_attack_with_a_defense_records_what_it_refused(
    photo: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    spec = "blacklight:hash=mix64,window=50"
    rc = main(["attack", photo, "--untargeted", "--max-queries", "300", "--out", str(out),
               "--defense", spec])  # fmt: skip
    assert rc == 3  # stopped by its target, as a 4xx would stop it
    doc = json.loads((out / "result.json").read_text())
    block = doc["defense"]
    assert doc["stop_reason"] == "rejected"
    assert block["rejected"] == 1
    assert block["first_rejected_at"] == doc["queries"] <= 10
    assert block["layers"][0]["window"] == 50
    with sqlite3.connect(out / "journal.sqlite") as db:
        rows = dict(db.execute("SELECT status, COUNT(*) FROM queries GROUP BY status").fetchall())
    assert rows.get("refused") == 1  # a refusal, kept on the tape (not lost in flight)
    assert sum(rows.values()) == doc["queries"]
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["defense"][0]["name"] == "blacklight"
    capsys.readouterr()
    assert main(["replay", str(out)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--defense", "shield"], "unknown defence"),
        (["--defense", "rnd:sigma=1"], "KEY one of: nu, seed"),
        (["--defense", "rnd", "--endpoint", "http://127.0.0.1:9/v1"], "local model"),
    ],
)
def test_bad_defense_options_are_one_line_before_any_query(
    photo: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], says: str
) -> None:
    capsys.readouterr()
    rc = main(["attack", photo, "--threat", "lo", "--untargeted", "--out", str(tmp_path / "r"),
               *extra])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert says in err
    assert not (tmp_path / "r" / "journal.sqlite").exists()


def test_the_adaptive_attack_goes_on_past_refusals_and_replays(
    photo: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    spec = "blacklight:hash=mix64,window=50"
    main(["attack", photo, "--untargeted", "--max-queries", "150", "--out", str(out),
          "--defense", spec, "--attack", "adaptive-square"])  # fmt: skip
    doc = json.loads((out / "result.json").read_text())
    assert doc["attack"] == "adaptive-square"
    assert doc["defense"]["rejected"] > 1  # it went on after its first refusal
    with sqlite3.connect(out / "journal.sqlite") as db:
        rows = dict(db.execute("SELECT status, COUNT(*) FROM queries GROUP BY status").fetchall())
    assert rows["refused"] == doc["defense"]["rejected"]
    assert sum(rows.values()) == doc["queries"] <= 150
    capsys.readouterr()
    assert main(["replay", str(out)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "runs"), [([], "adaptive-square"), (["--attack", "ql"], "adaptive-ql")]
)
def test_adaptive_runs_the_attacks_adaptive_version(
    photo: str, tmp_path: Path, extra: list[str], runs: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    main(["attack", photo, "--untargeted", "--max-queries", "120", "--out", str(out),
          "--defense", "blacklight:hash=mix64,window=50", "--adaptive", *extra])  # fmt: skip
    doc = json.loads((out / "result.json").read_text())
    assert doc["attack"] == runs
    assert doc["queries"] <= 120
    capsys.readouterr()
    assert main(["replay", str(out)]) == 0, capsys.readouterr().err  # refusals and all


def test_adaptive_without_an_adaptive_version_is_one_line_before_any_query(
    photo: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    rc = main(["attack", photo, "--threat", "lo", "--untargeted", "--adaptive",
               "--out", str(tmp_path / "r")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert "no adaptive version" in err
    assert "square" in err
    assert not (tmp_path / "r" / "journal.sqlite").exists()
