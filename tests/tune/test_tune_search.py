"""`bbattack tune`: a real search over the bench harness on a tiny model and four tiny photos
built here. It writes its outputs, resumes from its study (earlier trials kept), re-runs a
trial that was cut off, and its best point scores the same when evaluated again."""

from __future__ import annotations

import csv
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bbattack.bench import runner
from bbattack.bench.config import parse_config
from bbattack.cli import main
from bbattack.tune import TuneSpec, evaluate, search
from bbattack.tune.trial import Score
from bench_models import tiny_net

pytest.importorskip("optuna")

BUDGET = 150


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Four 32×32 photos of blocky colours that the tiny model puts in four classes."""
    root = tmp_path_factory.mktemp("photos")
    model = tiny_net()
    rng = np.random.default_rng(0)
    found: dict[int, np.ndarray[Any, Any]] = {}
    while len(found) < 4:
        x = np.kron(rng.random((3, 4, 4)), np.ones((8, 8))).astype(np.float32)
        p = model(x[None])[0]
        found.setdefault(int(p.argmax()), x)
    paths = []
    for c, x in sorted(found.items()):
        path = root / f"c{c}.png"
        Image.fromarray((x.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _argv(photos: list[str], out: Path, trials: int, *extra: str) -> list[str]:
    argv = ["tune", "square", "--model", "bench_models:tiny_net", "--backend", "torch"]
    for p in photos:
        argv += ["--images", p]
    return [*argv, "--eps", "0.3", "--budget", str(BUDGET), "--trials", str(trials),
            "--out", str(out), "--seed", "3", "-q", *extra]  # fmt: skip


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "trials.csv").open() as f:
        return list(csv.DictReader(f))


def _spec(photos: list[str]) -> TuneSpec:
    return TuneSpec(
        attack="square",
        threat="ql",
        goal="targeted",
        budget=BUDGET,
        eps=0.3,
        model="bench_models:tiny_net",
        backend="torch",
        images=tuple(photos),
    )


def test_search_writes_outputs_resumes_and_reproduces(photos: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(_argv(photos, out, 3)) == 0
    first = _rows(out)
    assert [r["state"] for r in first] == ["complete"] * 3
    assert {"p_init", "targeted_loss", "min_schedule"} <= set(first[0])
    # The first trial is the attack's current defaults: the search is compared with them.
    defaults = (float(first[0]["p_init"]), first[0]["targeted_loss"], first[0]["min_schedule"])
    assert defaults == (0.03, "ce", "10000")
    assert all(0 <= float(r["score"]) <= BUDGET and r["cases"] == "4" for r in first)
    assert (out / "trials.png").read_bytes()[:4] == b"\x89PNG"
    assert len(json.loads((out / "trials.json").read_text())["trials"]) == 3

    # The same command with more trials resumes: the first three are kept as they were.
    assert main(_argv(photos, out, 5)) == 0
    more = _rows(out)
    assert len(more) == 5
    assert more[:3] == first

    # best.toml is an [[attacks]] block a grid takes as it is.
    best = tomllib.loads((out / "best.toml").read_text())["attacks"][0]
    grid = {"model": {"factory": "bench_models:tiny_net"}, "images": {"paths": photos}}
    parse_config({**grid, "attacks": [best]})

    # The best point, evaluated again in a fresh place, scores what the search recorded.
    again = evaluate(_spec(photos), best["params"], tmp_path / "fresh")
    recorded = [float(r["score"]) for r in more if float(r["p_init"]) == best["params"]["p_init"]]
    assert again.median == recorded[0] == min(float(r["score"]) for r in more)


class _KilledError(Exception):
    pass


def test_a_trial_cut_off_is_run_again(
    photos: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = runner.run_task
    calls = {"n": 0}

    def dies_in_second_trial(task: runner.Task) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # the second trial's task: the process "dies" mid-trial
            raise _KilledError
        return real(task)

    monkeypatch.setattr(runner, "run_task", dies_in_second_trial)
    spec, study, grids = _spec(photos), tmp_path / "s.sqlite", tmp_path / "grids"
    with pytest.raises(_KilledError):
        search(spec, trials=2, study_path=study, grids=grids, seed=5)
    monkeypatch.setattr(runner, "run_task", real)

    resumed: list[list[int]] = []
    st = search(
        spec,
        trials=2,
        study_path=study,
        grids=grids,
        seed=5,
        on_resume=lambda done, cut: resumed.append(cut),
    )
    assert resumed == [[1]]  # trial 1 was left running
    states = [t.state.name for t in st.trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE"]
    assert st.trials[2].user_attrs["retry_of"] == 1
    assert st.trials[2].params == st.trials[1].params  # the same point, run to the end


def test_user_errors_are_one_line_before_anything(
    photos: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    cases = [
        (["tune", "nope"], "unknown attack"),
        (["tune", "ta-square"], "no search space"),
        (_argv(photos, out, 1, "--budget", "2"), "--budget"),
        (["tune", "square", "--photos", "heldout"], "--allow-heldout"),
        (["tune", "rays", "--goal", "targeted"], "--goal: rays has no targeted mode"),
        (_argv(photos, out, 0), "--trials"),
    ]
    for argv, says in cases:
        assert main([*argv, "--out", str(out)]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, (argv, lines)
        assert says in lines[0], (argv, lines)
    monkeypatch.setitem(sys.modules, "optuna", None)  # the extra is not installed
    assert main(_argv(photos, out, 1)) == 2
    assert "bbattack[tune]" in capsys.readouterr().err
    assert not out.exists()


def test_the_objective_is_the_median_with_ties_broken_by_the_mean() -> None:
    def score(median: float, mean: float) -> float:
        return Score(median, mean, 10, 10, "").objective(10_000)

    assert score(2, 10) < score(2, 20)  # the same median: the lower mean wins
    assert score(2, 10_000) < score(2.5, 2.5)  # a lower median wins whatever the means
