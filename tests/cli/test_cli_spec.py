"""`bbattack attack --model SPEC`: an ONNX file, a TorchScript file, a module:function and a
transformers directory, each with the preprocessing flags; result.json records the spec and
the weights hash, a replay loads the same model from it, and a bad spec is one line (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bbattack import bundled_photos, tuning
from bbattack.cli import main
from spec_models import MEAN, STD, Files, write_files

FLAGS = [
    "--input-size",
    "32",
    "--mean",
    ",".join(map(str, MEAN)),
    "--std",
    ",".join(map(str, STD)),
]
QUICK = ["--target", "3", "--max-queries", "20", "--seed", "0"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return write_files(tmp_path_factory.mktemp("spec-cli"))


@pytest.fixture(autouse=True)
def _quick(files: Files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BBATTACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(files.root))
    # Measuring batch sizes takes seconds per model and changes no answer.
    monkeypatch.setattr(tuning, "tuned_batch_size", lambda model: 8)


def photo() -> str:
    return str(bundled_photos()["coffee"])


def model_of(files: Files, kind: str) -> str:
    if kind == "hf":
        if files.hf is None:
            pytest.skip("transformers is not installed")
        return str(files.hf)
    return {"onnx": str(files.onnx), "torchscript": str(files.torchscript)}.get(kind, files.factory)


@pytest.mark.parametrize("kind", ["onnx", "torchscript", "factory", "hf"])
def test_attack_runs_against_each_kind_of_model(
    files: Files, tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["attack", photo(), "--model", model_of(files, kind), *FLAGS]
    argv += ["--labels", str(files.labels), *QUICK, "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    doc = json.loads((out / "result.json").read_text())
    target = doc["provenance"]["target"]
    assert target["spec"] == doc["provenance"]["config"]["model"]
    assert target["spec"].startswith(str(Path(model_of(files, kind))))
    assert "input_size=32x32" in target["spec"]
    assert len(target["weights"]) == 16
    assert target["preprocessing"]["mean"] == pytest.approx(list(MEAN))
    assert doc["target"]["name"] == "dog"  # --target 3 in labels.txt
    # A replay (and --verify, which asks the target once) loads the model from the spec.
    assert main(["replay", str(out), "--verify"]) == 0, capsys.readouterr().err
    # The same command resumes the run: its spec gives the same config (nothing left to do).
    capsys.readouterr()
    assert main([*argv[:-2], "--resume", str(out)]) == 0
    assert "nothing to resume" in capsys.readouterr().out


def test_a_file_surrogate_takes_its_preprocessing_in_its_string(
    files: Files, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    surrogate = f"{files.torchscript}?input_size=32&mean=0.5&std=0.25"
    argv = ["attack", photo(), "--model", str(files.onnx), *FLAGS, *QUICK]
    argv += ["--attack", "transfer", "--surrogate", surrogate, "--param", "iters=2"]
    argv += ["--out", str(tmp_path / "run")]
    assert main(argv) == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "run" / "result.json").read_text())
    assert doc["provenance"]["config"]["surrogates"] == [
        f"{files.torchscript}?input_size=32x32&mean=0.5&std=0.25"
    ]
    assert doc["surrogates"]["surrogates"][0]["name"] == "tiny.pt"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--model", "{garbage}"], "not an ONNX model"),
        (["--model", "{onnx}", "--input-size", "32", "--std", "0"], "--std: a std of 0"),
        (["--model", "{onnx}", "--input-size", "32", "--labels", "{short}"], "3 labels, but"),
        (["--model", "{pt}", "--input-size", "31"], "failed on a dummy batch"),
        (["--model", "lite0", "--mean", "0.5"], "built-in model with its own preprocessing"),
        (["--mean", "0.5"], "built-in model with its own preprocessing"),
        (["--model", "{onnx}", "--channels", "grb"], "--channels"),
        (["--model", "{missing}"], "no such file"),
        (["--model", "{onnx}", "--surrogate", "{onnx}", "--attack", "transfer"], "surrogate"),
    ],
)
def test_a_bad_spec_is_one_line_and_exit_2(
    files: Files,
    tmp_path: Path,
    argv: list[str],
    says: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = {
        "garbage": files.garbage,
        "onnx": files.onnx,
        "pt": files.torchscript,
        "short": files.short_labels,
        "missing": files.root / "missing.onnx",
    }
    given = [a.format(**names) for a in argv]
    out = tmp_path / "run"
    assert main(["attack", photo(), *given, *QUICK, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert says in err
    assert not (out / "run.json").exists()  # refused before any query
