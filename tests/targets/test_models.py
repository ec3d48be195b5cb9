"""Classifier wrappers: chunking, normalisation, ONNX export and its cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bbattack import (
    CallableClassifier,
    OnnxClassifier,
    TorchClassifier,
    UserInputError,
    load_model,
)
from bbattack.models import cache_dir, softmax
from support import DIGITS_SHAPE, Digits


def test_callable_classifier_softmaxes_logits_and_passes_probabilities() -> None:
    logits = np.array([[1.0, 2.0, 3.0]], np.float32)
    as_logits = CallableClassifier(lambda x: np.repeat(logits, len(x), 0), (1, 2, 2), 3)
    as_probs = CallableClassifier(
        lambda x: np.repeat(softmax(logits), len(x), 0), (1, 2, 2), 3, output="probs"
    )
    x = np.zeros((4, 1, 2, 2), np.float32)
    p = as_logits(x)
    assert p.shape == (4, 3)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    assert np.array_equal(p, as_probs(x))
    assert as_logits(np.zeros((0, 1, 2, 2), np.float32)).shape == (0, 3)
    with pytest.raises(ValueError, match="shape"):
        as_logits(np.zeros((4, 2, 2, 2), np.float32))


def test_torch_classifier_applies_its_normalisation(digits: Digits) -> None:
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    plain = TorchClassifier(net, DIGITS_SHAPE, 10)
    normed = TorchClassifier(net, DIGITS_SHAPE, 10, mean=0.5, std=0.25)
    x = digits.x[:8]
    np.testing.assert_allclose(normed(x), plain((x - 0.5) / 0.25), rtol=1e-5, atol=1e-6)


def test_onnx_twin_matches_torch(
    digits: Digits, digits_torch: TorchClassifier, digits_onnx: OnnxClassifier
) -> None:
    x = digits.x[:200]
    assert np.abs(digits_onnx(x) - digits_torch(x)).max() < 1e-5
    assert np.array_equal(digits_onnx(x).argmax(1), digits_torch(x).argmax(1))
    assert digits_onnx.backend == "onnx"
    assert digits_onnx.name == digits_torch.name


def test_onnx_export_is_cached_by_weight_hash(
    digits_torch: TorchClassifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BBATTACK_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path
    first = OnnxClassifier.from_torch(digits_torch)
    assert first.path.parent == tmp_path / "onnx"
    assert first.path.name == f"digits-mlp-{digits_torch.weights_digest()}.onnx"
    stamp = first.path.stat().st_mtime_ns
    again = OnnxClassifier.from_torch(digits_torch, batch_size=5)
    assert again.path == first.path
    assert again.path.stat().st_mtime_ns == stamp  # not exported again
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == [first.path.name]
    # Other weights, other file.
    torch.manual_seed(2)
    other = TorchClassifier(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)),
        DIGITS_SHAPE,
        10,
        name="digits-mlp",
    )
    assert OnnxClassifier.from_torch(other).path != first.path


def test_cache_dir_defaults_to_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BBATTACK_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "bbattack"


def test_load_model_refuses_unknown_names_and_backends() -> None:
    with pytest.raises(UserInputError, match="unknown model"):
        load_model("resnet-50")
    with pytest.raises(UserInputError, match="unknown backend"):
        load_model(backend="tensorflow")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("os:system", "system() failed (TypeError"),
        ("no_such_module_xyz:make", "cannot import no_such_module_xyz"),
        ("os:no_such_function", "os has no function no_such_function"),
        ("os:getcwd", "expected a torch module, a TorchClassifier or a Surrogate, got str"),
    ],
)
def test_a_bad_surrogate_factory_says_what_is_wrong(spec: str, says: str) -> None:
    from bbattack.surrogates import load_surrogate

    with pytest.raises(UserInputError) as e:
        load_surrogate(spec)
    assert says in str(e.value)
    assert "\n" not in str(e.value)
