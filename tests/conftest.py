"""Shared fixtures: a small digits classifier trained here (torch and ONNX) and an analytic model.

Nothing here touches the network or the user's cache: the ONNX export of the small model goes
to a private temporary directory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from sklearn.datasets import load_digits

from bbattack import CallableClassifier, OnnxClassifier, TorchClassifier

# Two xdist workers on two cores: one torch thread each keeps them from fighting.
torch.set_num_threads(1)

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]

DIGITS_SHAPE = (1, 8, 8)
ANALYTIC_SHAPE = (3, 4, 4)
ANALYTIC_CLASSES = 5


@dataclass(frozen=True)
class Digits:
    """scikit-learn's 8x8 digits on the 8-bit grid in [0, 1], shape (N, 1, 8, 8)."""

    x: FloatArray
    y: IntArray


@dataclass(frozen=True)
class Task:
    """Four correctly classified digits, a target for each, and a start image of that target."""

    x: FloatArray  # (4, 1, 8, 8)
    label: IntArray  # true (= predicted) class
    target: IntArray  # (label + 3) % 10
    start: FloatArray  # (4, 1, 8, 8), predicted as the target


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
        loss.backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="session")
def digits_torch(digits: Digits) -> TorchClassifier:
    """The small digits model behind the torch backend."""
    model = TorchClassifier(_train_mlp(digits), DIGITS_SHAPE, 10, name="digits-mlp")
    accuracy = float((model(digits.x).argmax(axis=1) == digits.y).mean())
    assert accuracy > 0.9, f"the digits model did not train (train accuracy {accuracy:.3f})"
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
def task(digits: Digits, digits_torch: TorchClassifier) -> Task:
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


ANALYTIC_W = np.array(
    [
        [4.0, -1.0, 0.5, -2.0, 1.0],
        [-2.0, 3.0, 0.5, 1.0, -1.5],
        [0.5, -1.0, -3.0, 2.5, 1.0],
    ],
    dtype=np.float32,
)
ANALYTIC_B = np.array([0.1, -0.2, 0.3, 0.0, -0.1], dtype=np.float32)


def analytic_logits(x: FloatArray) -> FloatArray:
    """Linear in the per-channel mean pixel; each row is computed on its own (no BLAS), so the
    output of a row does not depend on the batch it sits in."""
    means = x.reshape(len(x), ANALYTIC_SHAPE[0], -1).mean(axis=2)
    out: FloatArray = (means[:, :, None] * ANALYTIC_W[None]).sum(axis=1) + ANALYTIC_B
    return out


@pytest.fixture
def analytic_factory() -> Callable[[int], CallableClassifier]:
    def make(batch_size: int) -> CallableClassifier:
        return CallableClassifier(
            analytic_logits, ANALYTIC_SHAPE, ANALYTIC_CLASSES, batch_size=batch_size
        )

    return make


@pytest.fixture
def analytic(analytic_factory: Callable[[int], CallableClassifier]) -> CallableClassifier:
    return analytic_factory(64)
