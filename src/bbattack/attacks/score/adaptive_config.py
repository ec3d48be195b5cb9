"""Adaptive Square's configuration (Square's hyperparameters, and how it answers a defence)
and its state (see :class:`~bbattack.attacks.score.adaptive.AdaptiveSquareAttack`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, field_validator, model_validator

from ..base import BoolArray, FloatArray, IntArray
from ._scatter import Scatter
from ._screen import make_screen
from .square import SquareConfig, SquareState

__all__ = ["AdaptiveSquareConfig", "AdaptiveSquareState"]


class AdaptiveSquareConfig(SquareConfig):
    """Square's hyperparameters, and how it answers a defence."""

    eot: int = Field(
        1,
        ge=1,
        le=64,
        description="queries averaged per point (EOT against input noise such as RND; each "
        "is counted): 1 off",
    )
    calibrate: bool = Field(
        True,
        description="search, before the first step, the smallest window fraction p whose "
        "moves are not rejected (a few counted probes)",
    )
    raise_after: int = Field(
        3, ge=1, description="rejected steps in a row after which the floor on p doubles"
    )
    scatter: Scatter = Field(
        "auto",
        description="L∞, where the floor on p is above Square's own window: spread the "
        "floor's area over several windows of Square's size, each with its own place and "
        "signs (on), or move one window of the floor's size, whose few whole-image sign "
        "patterns a detector soon has all stored (off); auto: per image, whichever gets its "
        "candidates kept more often (UCB)",
    )
    dither: int = Field(
        4,
        ge=0,
        le=8,
        description="L∞, once an image has met a rejection: move a fresh random half of each "
        "candidate's values 1 8-bit level towards the clean image, raised up to this many "
        "levels by rejections in a row, by block beyond 2 (a pixel fingerprint, or a hash of "
        "block means, then differs from every stored query's); 0: off",
    )
    dither_grid: int = Field(
        7,
        ge=0,
        le=64,
        description="the dither's blocks (grid x grid, 0: none): per block and channel only "
        "values whose way to the clean image is a random direction move, so block means "
        "shift (PIHA hashes hue over a 7 x 7 grid of block means)",
    )
    flip_after: int = Field(
        0,
        ge=0,
        description="steps in a row without a kept window after which the search direction "
        "flips (against AAA's reversed loss trend); 0: never",
    )
    aaa_tau: float | None = Field(
        None,
        gt=0.0,
        description="AAA's interval width tau, known to the attacker (the defence is public "
        "and its parameters are not secrets): every answer is mapped back to the model's "
        "before the loss is taken, until an answer AAA at these settings cannot give (a "
        "margin in the gaps between its ranges) shows them wrong; that answer's candidate is "
        "kept, and from then on that image's answers are taken as given (and ``flip_after`` "
        "applies). With ``eot`` > 1 and input noise the averaged answers rarely fit. None: off",
    )
    aaa_beta: float = Field(
        0.8, gt=0.0, lt=1.0, description="AAA's shrink factor beta, with ``aaa_tau``"
    )
    stale: bool = Field(
        True,
        description="take an answer bit-identical to the last one any image was given (a "
        "silent defence's stale answer) as a rejection",
    )
    screen: str | None = Field(
        None,
        description="L∞: a similarity detector the attacker assumes, as a defence spec "
        "(piha, blacklight:window=50,hash=mix64; the defence is public, its parameters "
        "published): the attack keeps that detector's key of every query it sends and "
        "redraws, for free, a candidate it would flag (up to ``screen_tries`` draws; the "
        "last is sent whatever it shows). None: off",
    )
    screen_tries: int = Field(
        20, ge=1, le=1000, description="draws per step with ``screen``, the sent one included"
    )

    @field_validator("screen")
    @classmethod
    def _screen_spec(cls, v: str | None) -> str | None:
        if v is not None:
            make_screen(v)
        return v

    @model_validator(mode="after")
    def _screen_linf(self) -> AdaptiveSquareConfig:
        if self.screen is not None and self.norm != "linf":
            raise ValueError("screen: L∞ only (its redraws are L∞ Square's windows and dither)")
        return self


@dataclass
class AdaptiveSquareState(SquareState):
    """Square's state, and per image: the calibration's ladder search, the floor on p, the
    rejections in a row, the search direction, and the last answer (stale answers)."""

    top: IntArray  # the ladder's top level: p_min * 2^top >= 1
    cal_lo: IntArray  # the highest level known rejected (-1: none)
    cal_hi: IntArray  # the lowest level known to pass (top + 1: none)
    floor: IntArray  # the floor on p, as a ladder level (-1: no floor)
    streak: IntArray  # rejected steps in a row
    fails: IntArray  # steps in a row without a kept window
    direction: NDArray[np.float64]  # +1: lower the loss; -1: flipped
    undo: BoolArray  # AAA's answers are undone (aaa_tau, until an answer contradicts it)
    rejected: IntArray  # rejections met (refused or stale), per image
    prev: FloatArray  # (N, K) the last answer, for stale detection
    answered: BoolArray  # whether ``prev`` holds one
    grain: IntArray  # the dither in 8-bit levels (0: none yet)
    tries: IntArray  # (N, 2) steps above Square's window: one window, scattered
    kept: IntArray  # (N, 2) of which kept
    held: NDArray[np.uint64]  # (M, width) the screen's key of every query sent (``screen``)
    owner: IntArray  # (M,) the image each key was sent for
