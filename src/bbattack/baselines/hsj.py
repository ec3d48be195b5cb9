"""HopSkipJump from ART, as a decision-based baseline behind the oracle."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, model_validator

from ..attacks.registry import Paper, register
from ..errors import StartImageError
from ..images import start_candidates
from ..oracle import Observation, QueryKind
from .base import UNBOUNDED_ITERS, Baseline, BaselineConfig, library
from .tracker import Tracker, one_hot

__all__ = ["ArtHopSkipJump", "ArtHopSkipJumpConfig"]

FloatArray = NDArray[np.float32]


class ArtHopSkipJumpConfig(BaselineConfig):
    """HopSkipJump in ART; defaults are ART's and the paper's (B₀ = 100, at most 10⁴)."""

    init_eval: int = Field(
        100, ge=1, description="gradient-estimate queries in the first iteration (B₀)"
    )
    max_eval: int = Field(
        10_000, ge=1, description="cap on gradient-estimate queries per iteration"
    )
    batch_size: int = Field(64, ge=1, description="images per model call")

    @model_validator(mode="after")
    def _evals(self) -> ArtHopSkipJumpConfig:
        if self.init_eval > self.max_eval:
            raise ValueError("init_eval must be <= max_eval")
        return self


@register(
    "art-hsj",
    rank=10,
    paper=Paper(
        title="HopSkipJumpAttack: A Query-Efficient Decision-Based Attack",
        authors="Chen, Jordan, Wainwright",
        venue="IEEE S&P 2020",
        arxiv="1904.02144",
    ),
    views=("labels", "topk", "scores"),
    norms=("linf", "l2"),
    needs_start=True,
    budget=20_000,
    baseline=True,
)
class ArtHopSkipJump(Baseline[ArtHopSkipJumpConfig]):
    """HopSkipJump (L∞ or L2, decision-based) from the Adversarial Robustness Toolbox 1.20.1.

    Paper: Chen, Jordan, Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based
    Attack", IEEE S&P 2020 (arXiv:1904.02144).
    Threat model: the top-1 label only; runs under any view (``Label``, ``Labels(k)``,
    ``TopK(k)``, ``Scores``) and uses nothing but the top-1 label (the ART
    ``BlackBoxClassifier`` returns its one-hot). Norm: L∞ or L2 (ART ``norm=np.inf`` or 2).
    HopSkipJump starts from an image of the target class and walks along the decision boundary
    towards the source image, shrinking the distance; only an image inside the ε box counts,
    so the run stops at the first in-box image the model labels as the target (checked once
    more as the 8-bit image we save, where it is not on the grid already).
    Start image (targeted): ``start`` (its top-1 must be the target; else StartImageError), or,
    with none, the first bundled photo whose top-1 is the target (counted INIT queries).
    Untargeted, ART draws its own start: uniform noise images until one is misclassified
    (each a counted query).
    Query cost per step t (from 1): ``min(init_eval·√t, max_eval)`` gradient-estimate queries,
    a binary search (~log₂(1/θ) queries, θ = 0.01/d) and a geometric step-size search (≥ 1).
    Also: 1 clean query of ours, the start check, the library's clean and start predictions,
    1 final verification. ``max_iter`` None: iterate until the budget is spent.
    """

    config_class = ArtHopSkipJumpConfig
    fallback_by_score = False

    def _require(self) -> Any:
        library("scipy", "scipy")
        return library("art.attacks.evasion", "adversarial-robustness-toolbox")

    def _render(self, obs: Observation, k: int) -> FloatArray:
        return one_hot(obs, k)

    def _start(self, tracker: Tracker, start: FloatArray | None) -> FloatArray:
        oracle = tracker.oracle
        if start is not None:
            st = np.clip(start, *oracle.bounds).astype(np.float32)
            tracker.init_images.append(st)
            with tracker.charging(QueryKind.INIT):
                got = tracker.ask(st[None], record=False)
            if int(got[0].argmax()) != tracker.target:
                raise StartImageError(
                    f"the start image is not labelled as the target class {tracker.target} "
                    f"(image {tracker.image}); give a start image the model labels as the target"
                )
            return st
        cands = start_candidates(oracle.input_shape)
        if not tracker.can_pay(len(cands)):
            raise StartImageError(
                f"searching {len(cands)} bundled photos for a start image needs {len(cands)} "
                "queries; raise the budget or give a start image"
            )
        with tracker.charging(QueryKind.INIT):
            got = tracker.ask(cands, record=False)
        found = np.flatnonzero(got.argmax(axis=1) == tracker.target)
        if not len(found):
            raise StartImageError(
                f"no bundled photo is labelled as the target class {tracker.target}; "
                "give a start image of that class"
            )
        photo: FloatArray = cands[int(found[0])]
        tracker.init_images.append(photo)
        return photo

    def _attack(
        self, tracker: Tracker, x0: FloatArray, seed: int, start: FloatArray | None
    ) -> FloatArray | None:
        evasion = self._require()
        est_mod = library("art.estimators.classification", "adversarial-robustness-toolbox")
        cfg = self.config
        oracle = tracker.oracle
        targeted = tracker.target >= 0
        st = self._start(tracker, start) if targeted else None

        class _HSJ(evasion.HopSkipJump):  # type: ignore[misc, name-defined]
            """Charges the gradient-estimate samples as GRADIENT, the searches as LINE_SEARCH."""

            def _compute_update(self, *args: Any, **kwargs: Any) -> Any:
                with tracker.charging(QueryKind.GRADIENT):
                    return super()._compute_update(*args, **kwargs)

        est = est_mod.BlackBoxClassifier(
            tracker.ask, oracle.input_shape, oracle.num_classes, clip_values=oracle.bounds
        )
        atk = _HSJ(
            est,
            batch_size=cfg.batch_size,
            targeted=targeted,
            norm=np.inf if cfg.norm == "linf" else 2,
            max_iter=cfg.max_iter if cfg.max_iter is not None else UNBOUNDED_ITERS,
            max_eval=cfg.max_eval,
            init_eval=cfg.init_eval,
            verbose=False,
        )
        if st is None:  # untargeted: ART's labels are the clean prediction, its start noise
            adv = atk.generate(x0[None].copy())
        else:
            adv = atk.generate(
                x0[None].copy(), y=np.array([tracker.target]), x_adv_init=st[None].copy()
            )
        out: FloatArray = np.asarray(adv, dtype=np.float32)[0]
        return out
