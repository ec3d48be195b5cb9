"""Model specs in bench grids: ``[model]`` and ``surrogates`` take files with their
preprocessing, relative to the config file; the validated config holds one canonical spec
string, which every worker loads the same model from."""

from __future__ import annotations

from pathlib import Path

import pytest

from bbattack import tuning
from bbattack.bench import BenchDB
from bbattack.bench.config import load_config, parse_config
from bbattack.cli import main
from bbattack.errors import UserInputError
from spec_models import Files, write_files

GRID = """
name = "spec-smoke"
seed = 0
[model]
name = "models/tiny.onnx"
input_size = 32
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
labels = "models/labels.txt"
[images]
photos = ["coffee", "chelsea"]
[[attacks]]
name = "transfer"
surrogates = ["models/tiny.pt?input_size=32&mean=0.5&std=0.25"]
budget = [30]
eps = [0.1]
params = { iters = 2 }
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("bench-spec")
    (root / "models").mkdir()
    return write_files(root / "models")


@pytest.fixture(autouse=True)
def _quick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BBATTACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tuning, "tuned_batch_size", lambda model: 8)


def test_paths_are_relative_to_the_config_and_canonical(files: Files, tmp_path: Path) -> None:
    cfg_path = files.root.parent / "grid.toml"
    cfg_path.write_text(GRID)
    cfg, _ = load_config(cfg_path)
    assert cfg.model.name is not None
    assert cfg.model.name.startswith(f"{files.onnx}?input_size=32x32&labels={files.labels}&")
    assert cfg.attacks[0].surrogates == [f"{files.torchscript}?input_size=32x32&mean=0.5&std=0.25"]
    # A worker validates the dumped config again, without the config's folder: same spec.
    again = parse_config(cfg.model_dump(mode="json"))
    assert again.digest() == cfg.digest()


def test_a_grid_against_an_onnx_file_with_a_torchscript_surrogate_runs(
    files: Files, tmp_path: Path
) -> None:
    cfg_path = files.root.parent / "grid.toml"
    cfg_path.write_text(GRID)
    db_path = tmp_path / "r.sqlite"
    assert main(["bench", str(cfg_path), "--db", str(db_path), "-q"]) == 0
    with BenchDB.open(db_path, create=False, read_only=True) as db:
        rows = db.cases()
    assert len(rows) == 2
    assert all(r["status"] == "done" for r in rows)
    target = rows[0]["provenance"]["target"]
    assert target["spec"].startswith(str(files.onnx))
    assert target["preprocessing"]["input_size"] == [32, 32]


def test_a_bad_model_file_in_a_grid_names_its_field(files: Files) -> None:
    data = {
        "model": {"name": str(files.garbage)},
        "images": {"photos": ["coffee"]},
        "attacks": [{"name": "square", "budget": [10]}],
    }
    parse_config(data)  # the file exists: parsed; loading it is refused
    data["model"] = {"name": str(files.onnx), "std": [0.0]}
    with pytest.raises(UserInputError, match=r"^model: .*std of 0"):
        parse_config(data)
    data["model"] = {"name": "lite0", "mean": [0.5]}
    with pytest.raises(UserInputError, match="built-in model"):
        parse_config(data)
