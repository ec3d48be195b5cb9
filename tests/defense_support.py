"""The defence tests' photos and model: the bundled colour photos at 32 x 32, and a tiny
linear RGB classifier over them (built here, nothing downloaded)."""

from __future__ import annotations

import numpy as np

from bbattack import CallableClassifier
from bbattack.images import bundled_photos, load_image
from support import FloatArray

SIZE = 32
# In colour: grey photos have no hue, and PIHA hashes them all alike.
COLOUR = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "color", "china",
          "flower", "grace_hopper", "logo")  # fmt: skip

_W = np.random.default_rng(7).standard_normal((3 * 4 * 4, 10)).astype(np.float32) * 4.0


def _logits(x: FloatArray) -> FloatArray:
    means = x.reshape(len(x), 3, 4, SIZE // 4, 4, SIZE // 4).mean(axis=(3, 5)).reshape(len(x), -1)
    out: FloatArray = (means - 0.5) @ _W
    return out


def tiny_rgb_rows() -> CallableClassifier:
    """The tiny classifier one row at a time: a row's logits do not depend on its batch."""
    return CallableClassifier(
        lambda x: np.concatenate([_logits(x[i : i + 1]) for i in range(len(x))]),
        (3, SIZE, SIZE),
        10,
        name="tiny-rgb",
    )


def colour_photos() -> FloatArray | None:
    """The bundled colour photos (N, 3, 32, 32); None where fewer than 6 are installed."""
    found = bundled_photos()
    names = [n for n in COLOUR if n in found]
    if len(names) < 6:
        return None
    return np.stack([load_image(found[n], size=SIZE) for n in names])


def tiny_rgb() -> CallableClassifier:
    return CallableClassifier(_logits, (3, SIZE, SIZE), 10, name="tiny-rgb")
