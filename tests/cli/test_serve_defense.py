"""``bbattack serve --model SPEC`` (with ``bbattack attack``'s preprocessing flags) and
``--defense SPEC``: the model and the defences reach the app; a bad spec or defence is one
line and exit 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import uvicorn

from bbattack import tuning
from bbattack.cli import main
from spec_models import LABELS, MEAN, SIZE, STD, export_onnx, tiny_cnn


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A tiny ONNX classifier, its labels, and a file that is not a model."""
    root = tmp_path_factory.mktemp("serve-model")
    export_onnx(tiny_cnn(), root / "tiny.onnx", (1, 3, SIZE, SIZE), dynamic=True)
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (root / "garbage.onnx").write_bytes(b"this is not a model")
    return root / "tiny.onnx", root / "labels.txt", root / "garbage.onnx"


@pytest.fixture
def apps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The apps ``bbattack serve`` would run (uvicorn does not start)."""
    monkeypatch.setenv("BBATTACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tuning, "tuned_batch_size", lambda model: 8)  # seconds, no answer
    seen: list[Any] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: seen.append(self))
    return seen


def test_serve_runs_a_model_spec_with_its_flags_behind_the_defences(
    model_files: tuple[Path, Path, Path], apps: list[Any]
) -> None:
    onnx, labels, _ = model_files
    argv = ["serve", "--port", "0", "--api-key", "k", "--model", str(onnx)]
    argv += ["--input-size", str(SIZE), "--mean", ",".join(map(str, MEAN))]
    argv += ["--std", ",".join(map(str, STD)), "--labels", str(labels)]
    argv += ["--defense", "blacklight:action=ban,T=20", "--defense", "rnd:nu=0.02"]
    assert main(argv) == 0
    (server,) = apps
    app = server.config.app
    assert app.state.model_name == "tiny.onnx"
    assert app.state.labeller.model.class_names.name(2) == LABELS[2]
    blacklight, rnd = app.state.defenses
    assert (blacklight.name, blacklight.action, blacklight.threshold) == ("blacklight", "ban", 20)
    assert (rnd.name, rnd.nu) == ("rnd", 0.02)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--defense", "shield"], "unknown defence 'shield'"),
        (["--defense", "blacklight:T=999"], "T=999"),
        (["--defense", "rnd:sigma=1"], "KEY one of: nu, seed"),
        (["--model", "nowhere/tiny.onnx"], "no such file"),
        (["--model", "lite0", "--mean", "0.5"], "built-in model with its own preprocessing"),
        (["--mean", "0.5"], "built-in model with its own preprocessing"),
        (["--model", "tiny.onnx", "--scale", "7"], "scale"),
    ],
)
def test_a_bad_model_spec_or_defence_is_one_line_before_the_model_loads(
    extra: list[str],
    says: str,
    model_files: tuple[Path, Path, Path],
    apps: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(model_files[0].parent)

    def no_model(*args: Any, **kw: Any) -> None:
        raise AssertionError("the model must not load")

    monkeypatch.setattr("bbattack.models.load_model", no_model)
    assert main(["serve", "--port", "0", "--api-key", "k", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert says in err
    assert apps == []


def test_a_file_that_is_no_model_is_one_line(
    model_files: tuple[Path, Path, Path], apps: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--port", "0", "--api-key", "k", "--model", str(model_files[2])]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "not an ONNX model" in err
    assert apps == []
