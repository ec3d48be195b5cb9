"""Backend choice, the no-fallback rule for named backends, and measured batch sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bbattack import (
    BackendUnavailableError,
    TorchClassifier,
    UserInputError,
    _backend,
    models,
    tuning,
)


def test_auto_is_onnx_on_cpu_and_torch_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    # The probes are patched where resolve_backend reads them (bbattack.models re-exports it).
    monkeypatch.setattr(_backend, "cuda_available", lambda: False)
    assert models.resolve_backend("auto") == "onnx"
    monkeypatch.setattr(_backend, "cuda_available", lambda: True)
    assert models.resolve_backend("auto") == "torch"


def test_named_backend_never_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_backend, "onnx_available", lambda: False)
    monkeypatch.setattr(_backend, "cuda_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match="pip install onnxruntime"):
        models.resolve_backend("onnx")
    # Only an unnamed choice may fall back.
    assert models.resolve_backend("auto") == "torch"
    with pytest.raises(BackendUnavailableError):
        models.load_model(backend="onnx")


def test_unknown_backend_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="unknown backend"):
        models.resolve_backend("tpu")


def test_missing_onnxruntime_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes `import onnxruntime` raise ImportError.
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    assert models.onnx_available() is False


def test_batch_size_is_measured_once_and_cached(
    digits_torch: TorchClassifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BBATTACK_CACHE_DIR", str(tmp_path))
    calls: list[int] = []
    real = tuning.measure_throughput

    def counting(model: models.Classifier, bs: int, min_time_s: float = 0.4) -> float:
        calls.append(bs)
        return real(model, bs, min_time_s=0.01)

    monkeypatch.setattr(tuning, "measure_throughput", counting)
    first = tuning.tuned_batch_size(digits_torch)
    assert first in tuning.CANDIDATES
    assert sorted(calls) == sorted(tuning.CANDIDATES)
    table = json.loads((tmp_path / "batch_sizes.json").read_text())
    (entry,) = table.values()
    assert entry["batch_size"] == first
    assert set(entry["images_per_s"]) == {str(c) for c in tuning.CANDIDATES}
    calls.clear()
    assert tuning.tuned_batch_size(digits_torch) == first
    assert calls == []  # served from the cache


def test_tuning_prefers_the_smaller_of_near_equal_sizes(
    digits_torch: TorchClassifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BBATTACK_CACHE_DIR", str(tmp_path))
    fake = {4: 50.0, 8: 97.0, 16: 100.0, 32: 99.0, 64: 60.0, 128: 40.0}
    monkeypatch.setattr(tuning, "measure_throughput", lambda m, bs, min_time_s=0.4: fake[bs])
    choice, speeds = tuning.tune(digits_torch)
    assert choice == 8  # within 5% of the best (16), and smaller
    assert speeds == fake


def test_to_backend_uses_the_tuned_size_unless_given(
    digits_torch: TorchClassifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BBATTACK_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "measure_throughput", lambda m, bs, min_time_s=0.4: float(bs))
    tuned = models.to_backend(digits_torch, "onnx")
    assert tuned.backend == "onnx"
    assert tuned.batch_size == max(tuning.CANDIDATES)
    before = digits_torch.batch_size
    given = models.to_backend(digits_torch, "torch", batch_size=5)
    assert given.batch_size == 5
    assert digits_torch.batch_size == before  # the caller's model is left alone


def test_parity_problem_checks_probabilities_and_top5() -> None:
    import numpy as np

    p = np.full((2, 10), 0.01, np.float32)
    p[:, :5] = [[0.5, 0.2, 0.1, 0.08, 0.07], [0.3, 0.25, 0.2, 0.1, 0.1]]
    assert models.parity_problem(p, p.copy()) is None
    off = p.copy()
    off[0, 0] += 2e-4
    assert "max |Δp|" in str(models.parity_problem(p, off))
    swapped = p.copy()
    swapped[1, 4], swapped[1, 5] = 0.01 - 1e-5, 0.1 - 1e-5  # class 5 enters the top-5
    assert models.parity_problem(p, swapped, tolerance=1.0) == "top-5 differs on 1 input(s)"
