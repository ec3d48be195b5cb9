"""Shared fixtures: a small digits classifier trained here, its ONNX twin, an analytic model."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from sklearn.datasets import load_digits

from bbattack import CallableClassifier, OnnxClassifier, TorchClassifier

# Two xdist workers on two cores: one thread each keeps them from fighting.
torch.set_num_threads(1)

DIGITS_SHAPE = (1, 8, 8)
ANALYTIC_SHAPE = (3, 4, 4)
ANALYTIC_CLASSES = 5


@dataclass(frozen=True)
class Digits:
    """scikit-learn's 8x8 digits on the 8-bit grid in [0, 1], shape (N, 1, 8, 8)."""

    x: NDArray[np.float32]
    y: NDArray[np.int64]


@pytest.fixture(scope="session")
def digits() -> Digits:
    d = load_digits()
    x = (np.rint(d.images / 16.0 * 255.0) / 255.0).astype(np.float32)[:, None]
    return Digits(x=np.ascontiguousarray(x), y=d.target.astype(np.int64))


def _train_mlp(d: Digits) -> torch.nn.Module:
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
    """A 64-64-10 MLP trained on the digits for 300 full-batch Adam steps (fixed seed)."""
    return TorchClassifier(_train_mlp(digits), DIGITS_SHAPE, 10, name="digits-mlp")


@pytest.fixture(scope="session")
def small_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bbattack-cache")


@pytest.fixture(scope="session")
def digits_onnx(digits_torch: TorchClassifier, small_cache: Path) -> OnnxClassifier:
    """The same MLP exported to ONNX (cached in a private tmp dir, not the user's cache)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BBATTACK_CACHE_DIR", str(small_cache))
        return OnnxClassifier.from_torch(digits_torch, batch_size=64)
