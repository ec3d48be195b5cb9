"""Square Attack from torchattacks and from ART, as baselines behind the oracle."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import Field

from ..attacks.registry import register
from ..attacks.score.square import SQUARE_2020
from ..oracle import Observation
from .base import Baseline, BaselineConfig, C, library
from .tracker import Tracker, log_probs

__all__ = [
    "ArtSquare",
    "ArtSquareConfig",
    "TorchattacksSquare",
    "TorchattacksSquareConfig",
]

FloatArray = NDArray[np.float32]


class _SquareConfig(BaselineConfig):
    loss: Literal["ce", "margin"] = Field(
        "ce", description="targeted loss on log-probabilities: cross-entropy or margin"
    )
    p_init: float = Field(
        0.05, gt=0.0, le=1.0, description="initial fraction of pixels in a square update"
    )


class TorchattacksSquareConfig(_SquareConfig):
    """Square in torchattacks. ``max_iter`` is torchattacks' ``n_queries`` (per restart)."""

    n_restarts: int = Field(1, ge=1, description="random restarts (torchattacks n_restarts)")
    rescale_schedule: bool = Field(
        True, description="stretch the p schedule over max_iter (torchattacks resc_schedule)"
    )


class ArtSquareConfig(_SquareConfig):
    """Square in ART. ``reuse_answers`` is on: ART asks for the current iterate's label and then
    its loss in every iteration, so without it an iteration costs three queries, not one."""

    reuse_answers: bool = True
    nb_restarts: int = Field(1, ge=1, description="random restarts (ART nb_restarts)")


class _TorchOracle(torch.nn.Module):
    """A torch model whose forward pass is an oracle query; returns log-probabilities."""

    def __init__(self, tracker: Tracker) -> None:
        super().__init__()
        self.tracker = tracker
        # torchattacks finds the device from the model's first parameter.
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.tracker.ask(x.detach().cpu().numpy())
        return torch.from_numpy(out).to(x.device)


class _SquareBaseline(Baseline[C]):
    """What both Square wrappers share: full scores as log-probabilities, queries rounded onto
    the 8-bit grid inside the box."""

    quantize_queries = True

    def _render(self, obs: Observation, k: int) -> FloatArray:
        return log_probs(obs)


@register(
    "ta-square",
    rank=20,
    paper=SQUARE_2020,
    views=("scores",),
    norms=("linf", "l2"),
    untargeted=True,
    budget=20_000,
    baseline=True,
)
class TorchattacksSquare(_SquareBaseline[TorchattacksSquareConfig]):
    """Square Attack (L∞ or L2, targeted or untargeted) from torchattacks 3.5.1, via the oracle.

    Paper: Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient black-box
    adversarial attack via random search", ECCV 2020 (arXiv:1912.00049).
    Threat model: the full probability vector (``Scores``); the library's "logits" are the
    log-probabilities, so its softmax is the model's output. Norm: L∞ or L2, radius ``eps``.
    Random search: each iteration changes one random square of the image to ±ε (one sign per
    channel) and keeps it if the loss (cross-entropy ``ce`` or ``margin`` towards the target)
    drops. Every query is rounded onto the 8-bit grid inside the ε box before it is asked, so
    an image that reaches the target is one we can save.
    Query cost per step: 1. Also: 1 clean query of ours and, in the library, 1 clean check,
    1 stripe initialisation and 1 final check per restart; 1 final 8-bit verification.
    Defaults: loss ``ce``, i.e. −log p(target), the loss QL descends, so a comparison with QL
    is one of search strategies, not losses (``margin`` is the alternative). ``p_init`` 0.05:
    the paper's value for L∞ on ImageNet; torchattacks' default 0.8 is the authors' setting for
    adversarially trained MNIST, and the authors advise a p below the untargeted one for
    targeted runs of 10⁵ queries. With our budgets (~10⁴) and the schedule stretched over them
    (``max_iter`` None: p halves after 0.1%, 0.5%, 2%, 5%, ... of the budget) 0.05 already
    ends below 10⁻⁴; one restart, seeded with the case seed.
    """

    config_class = TorchattacksSquareConfig

    def _require(self) -> Any:
        return library("torchattacks", "torchattacks")

    def _attack(
        self, tracker: Tracker, x0: FloatArray, seed: int, start: FloatArray | None
    ) -> FloatArray | None:
        ta = self._require()
        cfg = self.config
        atk = ta.Square(
            _TorchOracle(tracker),
            norm="Linf" if cfg.norm == "linf" else "L2",
            eps=cfg.eps,
            n_queries=self._iterations(tracker, 1 + 2 * cfg.n_restarts, cfg.n_restarts),
            n_restarts=cfg.n_restarts,
            p_init=cfg.p_init,
            loss=cfg.loss,
            resc_schedule=cfg.rescale_schedule,
            seed=seed,
            verbose=False,
        )
        # Untargeted: torchattacks pushes away from the label it is given, the clean top-1.
        label = tracker.target
        if label >= 0:
            atk.set_mode_targeted_by_label(quiet=True)
        else:
            label = tracker.orig
        adv = atk(torch.from_numpy(x0[None].copy()), torch.tensor([label]))
        out: FloatArray = adv.detach().cpu().numpy()[0].astype(np.float32)
        return out


@register(
    "art-square",
    rank=21,
    paper=SQUARE_2020,
    views=("scores",),
    norms=("linf", "l2"),
    untargeted=False,
    budget=20_000,
    baseline=True,
)
class ArtSquare(_SquareBaseline[ArtSquareConfig]):
    """Square Attack (L∞ or L2, targeted) from the Adversarial Robustness Toolbox 1.20.1.

    Paper: Andriushchenko, Croce, Flammarion, Hein, ECCV 2020 (arXiv:1912.00049).
    Threat model: full scores (``Scores``), through an ART ``BlackBoxClassifierNeuralNetwork``
    whose predictions are the oracle's log-probabilities (ART's Square requires a neural-network
    estimator but never asks it for gradients). ART's Square is untargeted; it is made targeted
    with its ``adv_criterion`` (top-1 is the target) and ``loss`` hooks (``ce``: −log p(target),
    ``margin``: max other log p − log p(target)). Norm: L∞ or L2, radius ``eps``. Queries are
    rounded onto the 8-bit grid inside the ball, as in ``ta-square``.
    Query cost per step: 1 with ``reuse_answers`` (the default: ART re-asks the current iterate
    for its label and its loss every iteration, byte-identical repeats that are answered from
    memory); 3 without. Also: 1 clean query, 1 stripe initialisation, 1 final verification.
    Defaults as ``ta-square``: loss ``ce``, ``p_init`` 0.05, schedule over the budget.
    """

    config_class = ArtSquareConfig

    def _require(self) -> Any:
        library("scipy", "scipy")
        return library("art.attacks.evasion", "adversarial-robustness-toolbox")

    def _attack(
        self, tracker: Tracker, x0: FloatArray, seed: int, start: FloatArray | None
    ) -> FloatArray | None:
        evasion = self._require()
        est_mod = library("art.estimators.classification", "adversarial-robustness-toolbox")
        cfg = self.config
        oracle = tracker.oracle
        est = est_mod.BlackBoxClassifierNeuralNetwork(
            tracker.ask,
            oracle.input_shape,
            oracle.num_classes,
            channels_first=True,
            clip_values=oracle.bounds,
        )

        def loss(x: NDArray[np.floating], y: NDArray[np.floating]) -> NDArray[np.float64]:
            lp = np.asarray(est.predict(x), dtype=np.float64)
            rows = np.arange(len(lp))
            t = np.asarray(y).argmax(axis=1)
            lt: NDArray[np.float64] = lp[rows, t]
            if cfg.loss == "ce":
                return -lt
            other = lp.copy()
            other[rows, t] = -np.inf
            out: NDArray[np.float64] = other.max(axis=1) - lt
            return out

        def adv_criterion(y_pred: NDArray[np.floating], y: NDArray[np.floating]) -> Any:
            return np.asarray(y_pred).argmax(axis=1) == np.asarray(y).argmax(axis=1)

        atk = evasion.SquareAttack(
            est,
            norm=np.inf if cfg.norm == "linf" else 2,
            adv_criterion=adv_criterion,
            loss=loss,
            max_iter=self._iterations(tracker, 2 * cfg.nb_restarts, cfg.nb_restarts),
            eps=cfg.eps,
            p_init=cfg.p_init,
            nb_restarts=cfg.nb_restarts,
            verbose=False,
        )
        adv = atk.generate(x0[None].copy(), y=np.array([tracker.target]))
        out: FloatArray = np.asarray(adv, dtype=np.float32)[0]
        return out
