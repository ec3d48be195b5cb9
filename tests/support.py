"""Plain helpers shared by the tests and conftest.py (types, constants, the analytic model)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

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
