"""Plain helpers shared by the tests and conftest.py (types, constants, the analytic model)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bbattack import AttackResult

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


def check_batch_and_seeds(run: Callable[[slice, list[int]], AttackResult], n: int = 4) -> None:
    """A batch of ``n`` images equals ``n`` single runs (same seeds) image for image, runs
    repeat with the same seeds, and other seeds give other images. ``run(rows, seeds)``."""
    seeds = list(range(1, n + 1))
    batch = run(slice(0, n), seeds)
    np.testing.assert_array_equal(batch.x_adv, run(slice(0, n), seeds).x_adv)
    for i in range(n):
        one = run(slice(i, i + 1), [seeds[i]])
        np.testing.assert_array_equal(one.x_adv[0], batch.x_adv[i])
        a, b = one.images[0], batch.images[i]
        assert (a.queries, a.queries_at_success, a.queries_by_kind, a.steps, a.success) == (
            b.queries,
            b.queries_at_success,
            b.queries_by_kind,
            b.steps,
            b.success,
        )
    assert not np.array_equal(run(slice(0, n), [s + 100 for s in seeds]).x_adv, batch.x_adv)
