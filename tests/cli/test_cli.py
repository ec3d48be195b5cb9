"""The command line: classify, attack end to end, and one-line errors for bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import typer

from bbattack import BackendUnavailableError, bundled_photos
from bbattack.cli import main
from bbattack.cli._common import guard

pytestmark = pytest.mark.imagenet

OUTPUTS = {"adv.png", "figure.png", "trace.png", "result.json", "trace.jsonl"}
RUN_FILES = {"run.json", "inputs.npz", "journal.sqlite"}  # what resume and replay need
TRACE_KEYS = {"image", "step", "queries", "loss", "target_prob", "target_rank", "eps", "lr"}
# A short untargeted QL run on a photo the model is unsure about (~100 queries).
QUICK_ATTACK = [
    "--threat",
    "ql",
    "--attack",
    "ql",
    "--untargeted",
    "--max-queries",
    "300",
    "--param",
    "samples=20",
    "--seed",
    "0",
]


def photo(name: str) -> str:
    return str(bundled_photos()[name])


# ---------------------------------------------------------------- classify


def test_classify_prints_espresso_for_coffee(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", photo("coffee")]) == 0
    captured = capsys.readouterr()
    assert "espresso" in captured.out
    assert "967" in captured.out
    assert "Traceback" not in captured.err


def test_classify_json_is_parseable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", photo("coffee"), "--json", "--k", "3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 3
    assert rows[0]["id"] == 967
    assert rows[0]["name"] == "espresso"
    assert rows[0]["score"] > 0.9
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)


# ---------------------------------------------------------------- attack


def check_result_json(doc: dict[str, object]) -> None:
    assert set(doc) >= {
        "success",
        "queries",
        "queries_at_success",
        "queries_by_kind",
        "linf",
        "l2",
        "original",
        "target",
        "final_topk",
        "steps",
        "stop_reason",
        "wall_time_s",
        "seed",
        "attack",
        "threat",
        "config",
    }
    assert doc["success"] is True
    assert isinstance(doc["queries"], int)
    assert isinstance(doc["queries_at_success"], int)
    assert 0 < doc["queries_at_success"] <= doc["queries"] <= 300
    assert isinstance(doc["linf"], float)
    assert doc["linf"] <= 0.05 + 1e-6
    assert isinstance(doc["l2"], float)
    assert doc["target"] is None  # untargeted
    assert isinstance(doc["final_topk"], list)
    assert doc["final_topk"]
    assert doc["seed"] == 0
    assert isinstance(doc["config"], dict)
    assert doc["config"]["samples"] == 20
    assert doc["config"]["eps"] == 0.05
    assert doc["attack"] == "ql"
    assert doc["threat"] == {"view": "scores", "k": None}
    assert isinstance(doc["queries_by_kind"], dict)
    assert sum(doc["queries_by_kind"].values()) == doc["queries"]
    assert doc["stop_reason"] == "success"


def test_attack_writes_the_four_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["attack", photo("chelsea"), *QUICK_ATTACK, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "SUCCESS" in captured.out
    assert "Traceback" not in captured.err
    assert {p.name for p in out.iterdir()} == OUTPUTS | RUN_FILES  # no staging leftovers
    doc = json.loads((out / "result.json").read_text())
    check_result_json(doc)
    rows = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
    assert rows
    assert all(set(r) == TRACE_KEYS for r in rows)
    assert rows[-1]["queries"] <= doc["queries"]
    for name in ("adv.png", "figure.png", "trace.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_attack_json_prints_the_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["attack", photo("chelsea"), *QUICK_ATTACK, "--out", str(out), "--json"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)  # stdout holds the JSON and nothing else
    check_result_json(printed)
    assert printed == json.loads((out / "result.json").read_text())


# ---------------------------------------------------------------- bad input


def corrupt_png(tmp: Path) -> str:
    data = bundled_photos()["coffee"].read_bytes()
    p = tmp / "corrupt.png"
    p.write_bytes(data[: len(data) // 2])
    return str(p)


def text_file(tmp: Path) -> str:
    p = tmp / "notes.txt"
    p.write_text("not an image\n")
    return str(p)


Argv = Callable[[Path], list[str]]
BAD_INPUTS: dict[str, Argv] = {
    "corrupt image": lambda t: ["attack", corrupt_png(t), "--untargeted"],
    "non-image file": lambda t: ["attack", text_file(t), "--untargeted"],
    "missing file": lambda t: ["attack", str(t / "nope.png"), "--untargeted"],
    "unknown class": lambda t: ["attack", photo("chelsea"), "--target", "espreso"],
    "ambiguous class": lambda t: ["attack", photo("chelsea"), "--target", "missile"],
    "class id out of range": lambda t: ["attack", photo("chelsea"), "--target", "1000"],
    "eps 0": lambda t: ["attack", photo("chelsea"), "--untargeted", "--eps", "0"],
    "eps 1.5": lambda t: ["attack", photo("chelsea"), "--untargeted", "--eps", "1.5"],
    "k 0": lambda t: ["attack", photo("chelsea"), "--untargeted", "--k", "0"],
    "max-queries 0": lambda t: ["attack", photo("chelsea"), "--untargeted", "--max-queries", "0"],
    "start image not in top-k": lambda t: [
        "attack",
        photo("chelsea"),
        "--threat",
        "pi",
        "--target",
        "1",
        "--start-image",
        photo("coffee"),
    ],
    "unknown threat": lambda t: ["attack", photo("chelsea"), "--untargeted", "--threat", "xx"],
    "untargeted pi": lambda t: [
        "attack",
        photo("chelsea"),
        "--untargeted",
        "--threat",
        "pi",
        "--attack",
        "pi",
    ],
    "no target": lambda t: ["attack", photo("chelsea")],
    "odd samples": lambda t: [
        "attack",
        photo("chelsea"),
        "--untargeted",
        "--attack",
        "ql",
        "--param",
        "samples=21",
    ],
    "unknown param": lambda t: ["attack", photo("chelsea"), "--untargeted", "--param", "smples=2"],
    "param without =": lambda t: ["attack", photo("chelsea"), "--untargeted", "--param", "x"],
    "unknown attack": lambda t: ["attack", photo("chelsea"), "--untargeted", "--attack", "nes2"],
    "attack without the view": lambda t: [
        *["attack", photo("chelsea"), "--target", "1", "--threat", "lo", "--attack", "ql"],
    ],
    "norm the attack lacks": lambda t: [
        *["attack", photo("chelsea"), "--untargeted", "--attack", "ql", "--norm", "l2"],
    ],
    "unknown norm": lambda t: ["attack", photo("chelsea"), "--untargeted", "--norm", "l3"],
    "start image for ql": lambda t: [
        *["attack", photo("chelsea"), "--target", "1", "--start-image", photo("coffee")],
    ],
    "eps in params": lambda t: ["attack", photo("chelsea"), "--untargeted", "--param", "eps=0.1"],
    "classify corrupt image": lambda t: ["classify", corrupt_png(t)],
    "classify k 0": lambda t: ["classify", photo("coffee"), "--k", "0"],
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_line_and_exit_code_2(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = BAD_INPUTS[case](tmp_path)
    if argv[0] == "attack":
        argv += ["--out", str(out)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    assert len(lines[0]) > len("error: ")
    assert captured.out == ""
    assert not out.exists()


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("corrupt image", "corrupt.png"),
        ("non-image file", "not a recognised image"),
        ("unknown class", "967 (espresso)"),
        ("ambiguous class", "657"),
        ("eps 0", "--eps"),
        ("k 0", "--k"),
        ("max-queries 0", "--max-queries"),
        ("start image not in top-k", "start image"),
        ("unknown threat", "--threat"),
        ("untargeted pi", "--threat ql"),
        ("odd samples", "even"),
        ("unknown attack", "art-hsj"),
        ("attack without the view", "ql cannot run under the labels view: it needs scores"),
        ("norm the attack lacks", "ql supports the norms linf, not l2"),
        ("unknown norm", "choose linf or l2"),
        ("start image for ql", "--start-image"),
        ("eps in params", "give --eps"),
    ],
)
def test_error_messages_name_the_problem(
    case: str, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = BAD_INPUTS[case](tmp_path)
    assert main([*argv, "--out", str(tmp_path / "out")] if argv[0] == "attack" else argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    if case == "ambiguous class":
        assert "744" in err


def test_a_start_image_error_prints_exactly_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = BAD_INPUTS["start image not in top-k"](tmp_path)
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert err.count("\n") == 1


def test_a_path_with_brackets_prints_verbatim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "d[" / "x].png"  # "[/x]" reads as a closing Rich tag
    assert main(["classify", str(path)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert str(path) in lines[0]


def test_a_usage_error_prints_the_value_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", photo("coffee"), "--backend", "[/x]"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert "'[/x]'" in err


def test_an_install_hint_keeps_its_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    def no_ray() -> None:
        raise BackendUnavailableError("--ray needs Ray: pip install 'bbattack[ray]'")

    with pytest.raises(typer.Exit) as exit_info:
        guard(no_ray)
    assert exit_info.value.exit_code == 2
    assert capsys.readouterr().err == "error: --ray needs Ray: pip install 'bbattack[ray]'\n"


def test_dry_run_against_an_endpoint_sends_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    # Port 9 (discard) on loopback: nothing answers. A dry run sends no image; it says that the
    # endpoint does not answer (one free call with no image) and exits 3.
    argv = [
        "attack",
        photo("page"),
        "--threat",
        "pi",
        "--target",
        "Crossword",
        "--dry-run",
        "--endpoint",
        "http://127.0.0.1:9/v1/images:annotate",
        "--api-key",
        "k",
        "--max-queries",
        "12000",
        "--price-per-1000",
        "2.0",
        "--out",
        str(out),
    ]
    assert main(argv) == 3
    text = " ".join(capsys.readouterr().out.split())
    assert "12,000" in text
    assert "$24.00" in text
    assert "does not answer" in text
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--threat", "ql", "--target", "Dog", "--endpoint", "http://127.0.0.1:9"], "pi or lo"),
        (["--threat", "pi", "--target", "Dog", "--dry-run"], "need --endpoint"),
        (["--threat", "pi", "--target", "Dog", "--journal", "j.sqlite"], "need --endpoint"),
        (["--threat", "ql", "--target", "1", "--success", "topk"], "topk"),
    ],
)
def test_remote_flags_are_checked(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["attack", photo("page"), *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert message in err
    assert not out.exists()


def test_attacks_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attacks", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert {"ql", "pi", "lo", "ta-square", "art-square", "art-hsj"} <= set(by_name)
    assert by_name["ql"]["views"] == ["scores"]
    assert by_name["ql"]["default_for"] == []
    assert by_name["square"]["default_for"] == ["ql"]
    assert by_name["ta-square"]["baseline"] is True
    assert by_name["ta-square"]["norms"] == ["linf", "l2"]
    assert by_name["pi"]["paper"]["arxiv"] == "1804.08598"
    assert main(["attacks"]) == 0
    table = capsys.readouterr().out
    for name in by_name:
        assert name in table


def test_attack_picks_an_attack_by_name_under_a_threat(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # LO's attack under the top-k-with-scores view: the attack and the view are separate.
    argv = [*["attack", photo("chelsea"), "--threat", "pi", "--attack", "lo"]]
    argv += ["--target", "espresso", "--start-image", photo("coffee")]
    argv += ["--max-queries", "30", "--json", "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["attack"] == "lo"
    assert doc["threat"] == {"view": "topk", "k": 1}
    assert doc["queries"] <= 30


# ---------------------------------------------------------------- demo


def test_the_demo_reruns_with_force_and_its_journal_answers_the_repeats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    first = json.loads((out / "result.json").read_text())
    assert first["success"]
    # measured: 1,342 (PI-Square): the rocket projected into the ball is not yet a missile
    assert 20 < first["queries"] <= 5_000
    capsys.readouterr()
    # Again without --force: refused before any query, one line naming the way out.
    assert main(["demo", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--force" in err
    assert "\n" not in err
    assert "Traceback" not in err
    # `make demo` passes --force: the same result, every query answered from the journal.
    assert main(["demo", "--out", str(out), "--force"]) == 0
    again = json.loads((out / "result.json").read_text())
    assert (again["success"], again["queries"]) == (True, first["queries"])
