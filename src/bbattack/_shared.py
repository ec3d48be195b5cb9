"""What models and tuning both need, in a module of its own so that tuning never imports models
(models imports tuning for the batch size)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = ["cache_dir", "parity_inputs"]


def cache_dir() -> Path:
    """Where exported models are cached: $BBATTACK_CACHE_DIR, else $XDG_CACHE_HOME/bbattack."""
    env = os.environ.get("BBATTACK_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bbattack"


def parity_inputs(shape: tuple[int, int, int], n: int = 6) -> NDArray[np.float32]:
    """Inputs for backend parity checks: bundled photos where the shape allows, plus noise."""
    from .images import bundled_photos, load_image

    rng = np.random.default_rng(0)
    imgs: list[NDArray[np.float32]] = [rng.random(shape, dtype=np.float32) for _ in range(2)]
    if shape[0] == 3:
        for path in list(bundled_photos().values())[:n]:
            imgs.append(load_image(path, size=(shape[1], shape[2])))
    return np.stack(imgs)
