"""Models for benchmark-harness tests, importable by name from worker processes and Ray tasks
(``model.factory = "bench_models:tiny_net"``)."""

from __future__ import annotations

import time
from typing import Any

import torch

from bbattack.models import TorchClassifier

TINY_SHAPE = (3, 32, 32)


def tiny_net() -> TorchClassifier:
    """A fixed (seeded) linear classifier on 4x4-pooled colours: 10 classes, 32x32 inputs.
    Fast enough that a whole grid runs in seconds, and it tells the bundled photos apart."""
    gen = torch.Generator().manual_seed(1234)
    linear = torch.nn.Linear(48, 10)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(10, 48, generator=gen) * 4.0)
        linear.bias.zero_()
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), linear)
    return TorchClassifier(net, TINY_SHAPE, 10, mean=0.5, std=0.25, batch_size=256, name="tiny")


class _Slow(TorchClassifier):
    def _forward(self, x: Any) -> Any:
        time.sleep(0.01)  # a slow remote model: gives a test time to kill the run mid-grid
        return super()._forward(x)


def slow_tiny_net() -> TorchClassifier:
    """:func:`tiny_net` with 10 ms per model call."""
    net = tiny_net()
    net.__class__ = _Slow
    return net


def tiny_surrogate() -> TorchClassifier:
    """A surrogate of :func:`tiny_net`: its weights plus seeded noise (another model, close
    enough to transfer), on 8x8 pooled colours instead of 4x4 (another shape)."""
    gen = torch.Generator().manual_seed(99)
    target = tiny_net().module[2]
    linear = torch.nn.Linear(48, 10)
    with torch.no_grad():
        linear.weight.copy_(target.weight + torch.randn(10, 48, generator=gen) * 1.5)
        linear.bias.zero_()
    net = torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(8), torch.nn.AvgPool2d(2), torch.nn.Flatten(), linear
    )
    return TorchClassifier(net, TINY_SHAPE, 10, mean=0.5, std=0.25, name="tiny-surrogate")
