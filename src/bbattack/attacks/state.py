"""The state every attack's run has: per-image arrays (row i = image i), the attack's own
typed state, and the runner's context. Below the framework modules (base, checkpoint, finish),
which all read it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..surrogates import Surrogate
from .balls import Ball, LinfBall
from .goals import Goal

__all__ = ["AttackState", "BoolArray", "FloatArray", "IntArray", "RunContext"]

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


@dataclass
class RunContext:
    """What the runner owns for one run and never checkpoints: the clock (a resumed run's
    clock starts where the checkpoint's stopped) and the surrogates handed to ``run``."""

    t0: float = field(default_factory=time.perf_counter)
    surrogates: tuple[Surrogate, ...] = ()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


@dataclass
class AttackState:
    """Per-image attack state as plain arrays (row i = image i), so it can be checkpointed.

    What every attack has lives here; what one attack adds is its own typed state ``own``
    (a :class:`~bbattack.attacks._plain.PlainState` dataclass of arrays and scalars), which the
    attack builds in ``init`` and reads through :meth:`Attack.own`."""

    ids: IntArray  # oracle example ids
    x0: FloatArray  # originals (N, C, H, W)
    x: FloatArray  # current iterates (continuous)
    xq: FloatArray  # last checked 8-bit iterates: what is saved and verified
    target: IntArray  # target class, -1 for untargeted
    orig: IntArray  # clean top-1 label
    seeds: IntArray
    rngs: list[Any]  # one torch.Generator per image; get_state() is plain bytes
    active: BoolArray
    success: BoolArray
    queries_at_success: IntArray  # -1 until the first success
    steps: IntArray
    stop_reason: NDArray[np.object_]
    eps: FloatArray  # current radius (PI/LO shrink it)
    lr: FloatArray  # current max learning rate
    loss: FloatArray
    target_prob: FloatArray  # NaN where unknown
    target_rank: IntArray  # -1 where unknown
    finished_at: NDArray[np.float64]  # seconds since the start, when the image stopped
    goal: Goal = field(default_factory=Goal)
    ball: Ball = field(default_factory=lambda: LinfBall(0.05))
    own: Any = None
    ctx: RunContext = field(default_factory=RunContext)

    @property
    def targeted(self) -> BoolArray:
        return np.asarray(self.target >= 0)
