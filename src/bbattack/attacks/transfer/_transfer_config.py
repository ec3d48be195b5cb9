"""The transfer attack's config: its defaults and where they were measured."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..base import AttackConfig
from ._transfer import Craft, TransferLoss

__all__ = ["TransferConfig"]


class TransferConfig(AttackConfig):
    """Defaults measured on EfficientNet-Lite0 with Lite1 + Lite2 as surrogates (16 photos,
    targeted L∞ 0.05; BENCHMARKS.md, transfer.toml)."""

    iters: int = Field(
        20, ge=1, le=10_000, description="surrogate iterations before the first query"
    )
    round_iters: int = Field(
        20, ge=1, le=10_000, description="further surrogate iterations per later candidate"
    )
    rounds: int = Field(12, ge=1, description="candidates at ε before the hand-off, at most")
    patience: int = Field(
        6, ge=1, description="candidates without visible progress before the hand-off"
    )
    step: float = Field(0.125, gt=0.0, le=1.0, description="step size, a fraction of the radius")
    momentum: float = Field(1.0, ge=0.0, le=10.0, description="MI-FGSM momentum")
    diversity: float = Field(
        0.7, ge=0.0, le=1.0, description="probability of a random shrink-and-pad per iteration"
    )
    loss: TransferLoss = Field(
        "calib",
        description="surrogate loss: calib (log-probabilities calibrated to the target's "
        "last answer), logit or ce",
    )
    weight_step: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="BASES: each candidate nudges one surrogate's weight by ± this, kept when "
        "the target shows progress (0: equal weights)",
    )
    start_radii: tuple[float, ...] = Field(
        (0.1, 0.2, 0.35),
        description="PI/LO targeted: larger L∞ radii tried in turn for a candidate that the "
        "target shows in the target class (one query each), before the bundled photos",
    )
    photo_start: Literal["query", "guided"] = Field(
        "query",
        description="PI/LO targeted, when no candidate at the start radii showed the target "
        "class and the start image (or a bundled photo) is used: the query attack from it "
        "(PI-Square under top-k scores, HopSkipJump under labels), or the surrogate-guided "
        "shrink",
    )
    topk_handoff: Literal["square", "rays"] = Field(
        "square",
        description="untargeted under top-k scores (PI, L∞), after the candidates: Square on "
        "the clean class's shown score, or RayS on the labels",
    )
    shrink_iters: int = Field(
        10, ge=1, le=10_000, description="surrogate iterations per shrink candidate (PI/LO)"
    )
    delta: int = Field(4, ge=1, le=255, description="PI/LO: first ε step, in 8-bit levels")
    max_delta: int = Field(16, ge=1, le=255, description="PI/LO: largest ε step, in levels")
    repair_after: int = Field(
        3,
        ge=0,
        description="PI targeted: misses in a row at a one-level shrink before PI-Square's "
        "repair windows take over (0: never)",
    )
    give_up: int = Field(
        30,
        ge=1,
        description="labels: misses in a row at a one-level shrink before ``stuck`` applies",
    )
    stuck: Literal["stop", "hsj"] = Field(
        "stop",
        description="labels, when the shrink sticks: stop as stalled, or go on with "
        "HopSkipJump from the last image the target showed in the target class (measured: "
        "it closed neither of 2 stuck photos within 5,000 queries)",
    )
    p_init: float = Field(
        0.01, gt=0.0, le=1.0, description="Square's initial window after the hand-off (QL)"
    )
    prior: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="QL hand-off (L∞): at most this share of Square's windows take their signs "
        "from the surrogates' gradient at the iterate, as often as such windows are kept "
        "more than random ones (0: plain Square)",
    )

    def how(self, iters: int | None = None) -> Craft:
        return Craft(
            iters=iters or self.iters,
            step=self.step,
            momentum=self.momentum,
            diversity=self.diversity,
            loss=self.loss,
        )
