"""Shared fixtures: a small digits classifier trained here (torch and ONNX) and an analytic model.

Nothing here touches the network or the user's cache: the ONNX export of the small model goes
to a private temporary directory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from bbattack import CallableClassifier, OnnxClassifier, TorchClassifier
from support import (
    ANALYTIC_CLASSES,
    ANALYTIC_SHAPE,
    DIGITS_SHAPE,
    Digits,
    FloatArray,
    IntArray,
    Task,
    analytic_logits,
)

# Two xdist workers on two cores: one torch thread each keeps them from fighting.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits() -> Digits:
    d = load_digits()
    x = (np.rint(d.images / 16.0 * 255.0) / 255.0).astype(np.float32)[:, None]
    return Digits(x=np.ascontiguousarray(x), y=d.target.astype(np.int64))


def _train_mlp(d: Digits) -> torch.nn.Module:
    """64-64-10 MLP, 300 full-batch Adam steps, fixed seed; label smoothing keeps its
    probabilities away from 1.0 in float32, so untargeted losses are not flat."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(64, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(d.x), torch.from_numpy(d.y)
    for _ in range(300):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(xt), yt, label_smoothing=0.1)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    return net.eval()


@pytest.fixture(scope="session")
def digits_torch(digits: Digits) -> TorchClassifier:
    """The small digits model behind the torch backend (>90% train accuracy, checked)."""
    model = TorchClassifier(_train_mlp(digits), DIGITS_SHAPE, 10, name="digits-mlp")
    accuracy = float((model(digits.x).argmax(axis=1) == digits.y).mean())
    assert accuracy > 0.9, f"the digits model did not train (train accuracy {accuracy:.3f})"
    return model


def _train_cnn(d: Digits) -> torch.nn.Module:
    """A small CNN on the same digits: another architecture than the MLP target, as a user's
    local surrogate is another architecture than a cloud API's model."""
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 4 * 4, 10),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(d.x), torch.from_numpy(d.y)
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(xt), yt, label_smoothing=0.1)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    return net.eval()


@pytest.fixture(scope="session")
def digits_cnn(digits: Digits) -> TorchClassifier:
    """The CNN surrogate of the digits MLP (>90% train accuracy, checked)."""
    model = TorchClassifier(_train_cnn(digits), DIGITS_SHAPE, 10, name="digits-cnn")
    accuracy = float((model(digits.x).argmax(axis=1) == digits.y).mean())
    assert accuracy > 0.9, f"the digits CNN did not train (train accuracy {accuracy:.3f})"
    return model


@pytest.fixture(scope="session")
def small_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bbattack-cache")


@pytest.fixture(scope="session")
def onnx_factory(
    digits_torch: TorchClassifier, small_cache: Path
) -> Callable[[int], OnnxClassifier]:
    """ONNX twins of the digits model with a given chunk size, exported once to a tmp cache."""

    def make(batch_size: int) -> OnnxClassifier:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("BBATTACK_CACHE_DIR", str(small_cache))
            return OnnxClassifier.from_torch(digits_torch, batch_size=batch_size)

    return make


@pytest.fixture(scope="session")
def digits_onnx(onnx_factory: Callable[[int], OnnxClassifier]) -> OnnxClassifier:
    return onnx_factory(64)


@pytest.fixture(scope="session")
def cases(digits: Digits, digits_torch: TorchClassifier) -> tuple[FloatArray, IntArray, FloatArray]:
    """16 correctly classified digits, targets (label + 3) % 10, a start image per target."""
    pred = digits_torch(digits.x).argmax(axis=1)
    idx = np.flatnonzero(pred == digits.y)[:64:4]
    target = ((digits.y[idx] + 3) % 10).astype(np.int64)
    start = digits.x[[int(np.flatnonzero(pred == t)[0]) for t in target]]
    return digits.x[idx].copy(), target, start.copy()


@pytest.fixture(scope="session")
def task(digits: Digits, digits_torch: TorchClassifier) -> Task:
    """Images 0, 4, 8, 12 of the correctly classified digits; targets (label + 3) % 10; the
    first digit the model puts in each target class as its start image."""
    pred = digits_torch(digits.x).argmax(axis=1)
    idx = np.flatnonzero(pred == digits.y)[:16:4]
    label = digits.y[idx]
    target = (label + 3) % 10
    start_idx = [int(np.flatnonzero(pred == t)[0]) for t in target]
    return Task(
        x=digits.x[idx].copy(),
        label=label.copy(),
        target=target.astype(np.int64),
        start=digits.x[start_idx].copy(),
    )


@pytest.fixture
def analytic_factory() -> Callable[[int], CallableClassifier]:
    """The analytic linear model as a CallableClassifier with a given chunk size."""

    def make(batch_size: int) -> CallableClassifier:
        return CallableClassifier(
            analytic_logits, ANALYTIC_SHAPE, ANALYTIC_CLASSES, batch_size=batch_size
        )

    return make


@pytest.fixture
def analytic(analytic_factory: Callable[[int], CallableClassifier]) -> CallableClassifier:
    return analytic_factory(64)


@pytest.fixture(scope="session")
def colour_photos() -> FloatArray:
    """The bundled colour photos at 32 x 32 (the defence tests)."""
    from defense_support import colour_photos as load

    found = load()
    if found is None:
        pytest.skip("fewer than 6 bundled colour photos installed")
    return found


@pytest.fixture
def tiny_rgb() -> CallableClassifier:
    """A tiny linear classifier of 32 x 32 RGB images into 10 classes."""
    from defense_support import tiny_rgb as make

    return make()


@pytest.fixture
def astronaut() -> str:
    """scikit-image's astronaut photo (a skip where it is not installed)."""
    from bbattack.images import bundled_photos

    found = bundled_photos()
    if "astronaut" not in found:
        pytest.skip("scikit-image's astronaut photo is not installed")
    return str(found["astronaut"])
