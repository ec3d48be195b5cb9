"""RND (Qin, Fan, Zha, Wu, "Random Noise Defense Against Query-Based Black-Box Attacks",
NeurIPS 2021, arXiv 2104.11470): Gaussian noise of standard deviation ``nu`` (0.02 of the
pixel range) is added to every input before the model sees it, and the result clipped to
[0, 1]. Stateless as a defence; the noise stream is seeded (``seed``) and its generator's
state is part of the snapshot, so a resumed run draws the same noise as an unbroken one (and
the journal's inputs, noise included, match on resume and replay)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UserInputError
from ..oracle import Forward, Middleware, Observation, Query

__all__ = ["Rnd"]


class Rnd(Middleware):
    """Gaussian input noise in front of the target."""

    name = "rnd"

    def __init__(self, nu: float = 0.02, seed: int = 0) -> None:
        if not (0.0 <= nu <= 1.0):
            raise UserInputError(f"rnd: nu must be in [0, 1], got {nu}")
        self.nu, self.seed = nu, seed
        self._rng = np.random.default_rng(seed)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "nu": self.nu, "seed": self.seed}

    def handle(self, query: Query, forward: Forward) -> Observation:
        noise = self._rng.standard_normal(query.x.shape, dtype=np.float32) * np.float32(self.nu)
        return forward(np.clip(query.x + noise, 0.0, 1.0).astype(np.float32))

    def snapshot(self) -> dict[str, Any]:
        return {"rng": dict(self._rng.bit_generator.state)}

    def restore(self, snap: dict[str, Any]) -> None:
        self._rng.bit_generator.state = snap["rng"]
