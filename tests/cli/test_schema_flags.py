"""``bbattack attack --endpoint URL --schema NAME``: the wire schema's flags, checked before
anything is sent, and the dry run at the schema's price."""

from __future__ import annotations

from pathlib import Path

import pytest

from bbattack import bundled_photos
from bbattack.cli import main


def attack_argv(out: Path, *extra: str) -> list[str]:
    page = str(bundled_photos()["page"])
    return [
        "attack",
        page,
        "--threat",
        "pi",
        "--target",
        "Crossword",
        "--max-queries",
        "2000",
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--endpoint", "http://127.0.0.1:9", "--api-key", "k", "--schema", "bogus"], "bogus"),
        (["--endpoint", "http://127.0.0.1:9", "--api-key", "k", "--labels-path", "a"], "json"),
        (["--schema", "hf"], "need --endpoint"),
        (
            ["--endpoint", "http://127.0.0.1:9", "--api-key", "k", "--schema", "rekognition"],
            "ACCESS_KEY_ID",
        ),
        (
            ["--endpoint", "http://127.0.0.1:9/models/m", "--schema", "hf", "--max-cost", "1"],
            "price",
        ),
    ],
)
def test_bad_schema_flags_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(attack_argv(tmp_path / "out", *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_dry_run_prices_the_schema_and_skips_a_probe_it_cannot_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A generic JSON API has no free call: the dry run says so and sends nothing at all.
    argv = attack_argv(
        tmp_path / "out",
        *["--endpoint", "http://127.0.0.1:9/predict", "--api-key", "k", "--dry-run"],
        *["--schema", "json", "--labels-path", "[*].label", "--scores-path", "[*].score"],
        *["--price-per-1000", "3.0"],
    )
    assert main(argv) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "2,000 queries ≈ $6.00 at $3.00/1000" in text
    assert "skipped" in text
    # Rekognition's list price, and its probe against a closed port: exit 3.
    argv = attack_argv(
        tmp_path / "out",
        *["--endpoint", "http://127.0.0.1:9", "--api-key", "AKID:SECRET", "--dry-run"],
        *["--schema", "rekognition"],
    )
    assert main(argv) == 3
    text = " ".join(capsys.readouterr().out.split())
    assert "$2.00 at $1.00/1000" in text
    assert "does not answer" in text
    assert not (tmp_path / "out").exists()
