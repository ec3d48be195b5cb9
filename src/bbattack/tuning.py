"""Batch sizes measured, not guessed: the fastest model batch per model, backend and machine,
measured once and cached on disk."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from ._shared import cache_dir, parity_inputs
from .results import write_atomic

__all__ = ["CANDIDATES", "measure_throughput", "tune", "tuned_batch_size"]

CANDIDATES = (4, 8, 16, 32, 64, 128)


class Tunable(Protocol):
    """What tuning uses of a ``models.Classifier``: typed structurally, as models imports tuning."""

    name: str
    backend: str
    input_shape: tuple[int, int, int]

    def _forward(self, x: NDArray[np.float32]) -> Any: ...


def _key(model: Tunable) -> str:
    device = getattr(model, "device", None) or getattr(model, "providers", None) or "cpu"
    digest = getattr(model, "digest", "") or ""
    return f"{model.name}|{digest}|{model.backend}|{device}|{os.cpu_count()}|{model.input_shape}"


def sample_inputs(shape: tuple[int, int, int], n: int) -> NDArray[np.float32]:
    """Real photos where the shape allows: uniform noise can drive activations into float
    denormals, which slows some backends (torch on CPU) and skews the measurement."""
    base = parity_inputs(shape)
    photos = base[2:] if len(base) > 2 else base  # parity_inputs puts two noise images first
    out: NDArray[np.float32] = photos[np.arange(n) % len(photos)]
    return out


def measure_throughput(model: Tunable, batch_size: int, min_time_s: float = 0.4) -> float:
    """Images per second of one forward chunk of ``batch_size``, after a warm-up call."""
    x = sample_inputs(model.input_shape, batch_size)
    model._forward(x)  # warm-up: allocations, kernel selection
    n, t0 = 0, time.perf_counter()
    while True:
        model._forward(x)
        n += batch_size
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time_s and n >= 2 * batch_size:
            return n / elapsed


def _load(path: Path) -> dict[str, dict[str, Any]]:
    try:
        table: dict[str, dict[str, Any]] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return table


def tune(model: Tunable, candidates: tuple[int, ...] = CANDIDATES) -> tuple[int, dict[int, float]]:
    """Measure every candidate batch size, cache the fastest, return (choice, images/s)."""
    speeds = {bs: measure_throughput(model, bs) for bs in candidates}
    best = max(speeds.values())
    # Within 5% of the best, prefer the smaller batch: less memory, finer budget granularity.
    choice = min(bs for bs, v in speeds.items() if v >= 0.95 * best)
    path = cache_dir() / "batch_sizes.json"
    table = _load(path)
    table[_key(model)] = {
        "batch_size": choice,
        "images_per_s": {str(k): v for k, v in speeds.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(table, indent=2) + "\n")
    return choice, speeds


def tuned_batch_size(model: Tunable) -> int:
    """The fastest batch size for this model on this backend and machine (measured once)."""
    hit = _load(cache_dir() / "batch_sizes.json").get(_key(model))
    if hit is not None:
        return int(hit["batch_size"])
    return tune(model)[0]
