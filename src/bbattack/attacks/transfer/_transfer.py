"""Surrogate-side computation for surrogate-guided attacks: targeted or untargeted MI-FGSM with
input diversity on a weighted surrogate ensemble, and the calibration that makes the ensemble
agree with what the target last showed. No oracle in here: surrogates are free.

Every random draw (input diversity) comes in as an argument, drawn per image from its own
counter-based stream, so an image gets the same transforms in any batch.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..._threads import one_torch_thread
from ...classes import imagenet_classes
from ...errors import UserInputError
from ...oracle import LabelsObservation, Observation, Oracle, ScoresObservation, TopKObservation
from ...surrogates import Surrogate
from ...targets import Vocabulary
from ...targets.labels import LabelIndex
from ..balls import Ball

__all__ = [
    "DRAWS",
    "Craft",
    "SurrogateMeter",
    "calibration",
    "class_masks",
    "craft",
    "ensemble_logp",
    "metered",
    "surrogate_classes",
    "surrogate_gradient",
]

FloatArray = NDArray[np.float32]
TransferLoss = Literal["calib", "logit", "ce"]
DRAWS = 4  # uniform draws per image and iteration: apply?, scale, x offset, y offset
_TINY = 1e-30
_LABEL_MARGIN = 1.0  # label-only calibration: the observed winner leads by this (nats)


@dataclass(frozen=True)
class Craft:
    """How perturbations are crafted on the surrogates."""

    iters: int = 20
    step: float = 0.125  # step size as a fraction of the radius
    momentum: float = 1.0
    diversity: float = 0.7  # probability of a random shrink-and-pad per iteration
    loss: TransferLoss = "calib"


@dataclass
class SurrogateMeter:
    """Surrogate work during one run: what a user waits for before (and between) queries.
    ``candidates`` counts crafted images (a batch of 8 crafting once counts 8); ``seconds`` is
    wall time in :func:`craft`. ``on_iteration(meter, done, of)`` is told after every
    iteration (a progress bar). Never checkpointed: it measures, it does not decide."""

    candidates: int = 0
    iterations: int = 0
    seconds: float = 0.0
    gradients: int = 0  # prior gradients (:func:`surrogate_gradient`), counted apart
    gradient_seconds: float = 0.0
    on_iteration: Callable[[SurrogateMeter, int, int], None] | None = None

    def per_candidate(self) -> float | None:
        """Wall seconds of surrogate work per crafted image (None before any)."""
        return self.seconds / self.candidates if self.candidates else None

    def block(self) -> dict[str, float | int]:
        """What provenance records."""
        out: dict[str, float | int] = {
            "candidates": self.candidates,
            "iterations": self.iterations,
            "seconds": round(self.seconds, 3),
            "seconds_per_candidate": round(self.seconds / max(self.candidates, 1), 3),
        }
        if self.gradients:
            out |= {
                "gradients": self.gradients,
                "gradient_seconds": round(self.gradient_seconds, 3),
            }
        return out


# Set by whoever runs an attack and wants to see its surrogate work (CLI progress, bench).
_METER: ContextVar[SurrogateMeter | None] = ContextVar("bbattack_surrogate_meter", default=None)


@contextmanager
def metered(meter: SurrogateMeter) -> Iterator[SurrogateMeter]:
    """Count the surrogate work done inside the block into ``meter``."""
    token = _METER.set(meter)
    try:
        yield meter
    finally:
        _METER.reset(token)


@one_torch_thread
def craft(
    surrogates: Sequence[Surrogate],
    weights: NDArray[np.float64],
    x0: FloatArray,
    x: FloatArray,
    g: FloatArray,
    classes: NDArray[np.bool_],
    targeted: NDArray[np.bool_],
    radius: NDArray[np.floating],
    ball: Ball,
    how: Craft,
    draws: NDArray[np.float64],
    bias: FloatArray | None = None,
    step_scale: NDArray[np.floating] | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Move ``x`` (inside the ball of ``radius`` around ``x0``) to raise the ensemble's score
    of ``classes`` (N, K) where ``targeted``, to lower it elsewhere (the clean class of an
    untargeted run). A row of ``classes`` may mark several classes (a label API's "Dog" is
    every breed): their score is the log-sum-exp over them.

    Losses: ``logit`` (the classes' logits, Zhao et al. 2021), ``ce`` (their log-probability),
    ``calib`` (their log-probability under the ensemble's mean log-probabilities plus ``bias``
    (N, K): the calibration to what the target last showed; ``logit`` when there is none).
    ``weights`` (N, S): one weight per image and surrogate; ``g`` (N, C, H, W): the MI-FGSM
    momentum to continue from; ``draws`` (N, iters × DRAWS): uniforms for input diversity;
    ``step_scale`` (N,): what the step is a fraction of (default: the radius).
    Returns the float images inside the ball (not quantised) and the momentum.
    """
    import torch

    n = len(x0)
    if n == 0:
        return x.copy(), g.copy()
    t0 = torch.from_numpy(np.ascontiguousarray(x0, np.float32))
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).clone()
    gt = torch.from_numpy(np.ascontiguousarray(g, np.float32)).clone()
    r = torch.from_numpy(np.asarray(radius, np.float32)).view(n, 1, 1, 1)
    w = torch.from_numpy(np.asarray(weights, np.float32))
    mask = torch.from_numpy(np.asarray(classes, bool))
    sign = torch.from_numpy(np.where(targeted, 1.0, -1.0).astype(np.float32))  # raise / lower
    b = None if bias is None else torch.from_numpy(np.asarray(bias, np.float32))
    loss = how.loss if how.loss != "calib" or b is not None else "logit"
    u = torch.from_numpy(np.asarray(draws, np.float32)).view(n, -1, DRAWS)
    # The step is a fraction of ``step_scale`` (default: the radius); a large ball with steps
    # to match would make noise of the image.
    scale = r if step_scale is None else torch.from_numpy(np.asarray(step_scale, np.float32))
    alpha = scale.view(n, 1, 1, 1) * how.step
    meter, t_start = _METER.get(), time.perf_counter()
    for it in range(u.shape[1]):
        xt.requires_grad_(True)
        xi = _diverse(xt, u[:, it], how.diversity)
        obj = _objective(surrogates, xi, w, mask, loss, b)
        (grad,) = torch.autograd.grad((sign * obj).sum(), xt)
        with torch.no_grad():
            xt, gt = _update(xt, gt, grad, t0, r, alpha, how.momentum, ball.norm == "linf")
        if meter is not None:
            meter.iterations += 1
            if meter.on_iteration is not None:
                meter.on_iteration(meter, it + 1, u.shape[1])
    if meter is not None:
        meter.candidates += n
        meter.seconds += time.perf_counter() - t_start
    return xt.detach().numpy().astype(np.float32), gt.numpy().astype(np.float32)


@one_torch_thread
def surrogate_gradient(
    surrogates: Sequence[Surrogate],
    weights: NDArray[np.float64],
    x: FloatArray,
    classes: NDArray[np.bool_],
    targeted: NDArray[np.bool_],
    bias: FloatArray | None = None,
    loss: TransferLoss = "calib",
) -> FloatArray:
    """(N, C, H, W): the direction in which the ensemble's score of ``classes`` rises where
    ``targeted`` (falls elsewhere) at ``x``, without input diversity: a prior for a query
    attack's steps. Counted into the surrogate meter apart from the crafted candidates."""
    import torch

    if len(x) == 0:
        return np.zeros_like(x)
    meter, t_start = _METER.get(), time.perf_counter()
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).requires_grad_(True)
    w = torch.from_numpy(np.asarray(weights, np.float32))
    mask = torch.from_numpy(np.asarray(classes, bool))
    sign = torch.from_numpy(np.where(targeted, 1.0, -1.0).astype(np.float32))
    b = None if bias is None else torch.from_numpy(np.asarray(bias, np.float32))
    kind = loss if loss != "calib" or b is not None else "logit"
    obj = _objective(surrogates, xt, w, mask, kind, b)
    (grad,) = torch.autograd.grad((sign * obj).sum(), xt)
    if meter is not None:
        meter.gradients += len(x)
        meter.gradient_seconds += time.perf_counter() - t_start
    return np.asarray(grad.numpy(), np.float32)


def _objective(
    surrogates: Sequence[Surrogate], xi: Any, w: Any, mask: Any, loss: str, bias: Any
) -> Any:
    import torch

    if loss == "calib":
        lp = sum(
            w[:, k, None] * torch.log_softmax(s.logits(xi), dim=1) for k, s in enumerate(surrogates)
        )
        lp = torch.log_softmax(lp + bias, dim=1)
        return torch.logsumexp(lp.masked_fill(~mask, float("-inf")), dim=1)
    obj = xi.new_zeros(len(xi))
    for k, s in enumerate(surrogates):
        z = s.logits(xi)
        score = torch.logsumexp(z.masked_fill(~mask, float("-inf")), dim=1)
        if loss == "ce":
            score = score - torch.logsumexp(z, dim=1)
        obj = obj + w[:, k] * score
    return obj


def _update(
    xt: Any, g: Any, grad: Any, t0: Any, r: Any, alpha: Any, mu: float, linf: bool
) -> tuple[Any, Any]:
    """One MI-FGSM step (Dong et al. 2018) and the projection into the ball."""
    import torch

    n = len(xt)
    if linf:
        l1 = grad.abs().flatten(1).mean(1).clamp_min(1e-12).view(n, 1, 1, 1)
        g = mu * g + grad / l1
        xt = xt + alpha * g.sign()
        return torch.minimum(torch.maximum(xt, t0 - r), t0 + r).clamp(0.0, 1.0), g
    l2 = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(n, 1, 1, 1)
    g = mu * g + grad / l2
    gn = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(n, 1, 1, 1)
    d = xt + alpha * g / gn - t0
    dn = d.flatten(1).norm(dim=1).clamp_min(1e-12).view(n, 1, 1, 1)
    return (t0 + d * torch.clamp(r / dn, max=1.0)).clamp(0.0, 1.0), g


def _diverse(x: Any, u: Any, p: float) -> Any:
    """Input diversity (Xie et al., CVPR 2019), one draw per image: with probability ``p``
    shrink the image by up to 10% and place it at random on a black canvas."""
    import torch

    n = len(x)
    on = u[:, 0] < p
    s = torch.where(on, 1.0 - 0.1 * u[:, 1], torch.ones(n))
    cx = (1.0 - s) * (2.0 * u[:, 2] - 1.0)
    cy = (1.0 - s) * (2.0 * u[:, 3] - 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / s
    theta[:, 0, 2], theta[:, 1, 2] = -cx / s, -cy / s
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


@one_torch_thread
def ensemble_logp(
    surrogates: Sequence[Surrogate], weights: NDArray[np.float64], x: FloatArray
) -> FloatArray:
    """(N, K): the ensemble's weighted mean log-probabilities at ``x`` (no input diversity)."""
    import torch

    w = torch.from_numpy(np.asarray(weights, np.float32))
    with torch.no_grad():
        xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        lp: Any = sum(
            w[:, k, None] * torch.log_softmax(s.logits(xt), dim=1) for k, s in enumerate(surrogates)
        )
    return np.asarray(lp.numpy(), np.float32)


def calibration(obs: Observation, logp: FloatArray, target: NDArray[np.int64]) -> FloatArray:
    """(N, K) log-probability offsets that make the ensemble (``logp``) agree with what the
    target revealed in ``obs``: every class under scores; the revealed classes under top-k;
    under labels, the revealed winner (unless it is the target) leads by a margin. The
    surrogates then push down the classes the target actually prefers."""
    out = np.zeros_like(logp)
    rows = np.arange(len(logp))
    if isinstance(obs, ScoresObservation):
        return np.asarray(np.log(np.maximum(obs.probs, _TINY)) - logp, np.float32)
    if isinstance(obs, TopKObservation):
        lab = obs.labels
        for j in range(lab.shape[1]):  # k columns, vectorised over images
            ok = lab[:, j] >= 0
            c = lab[ok, j]
            out[rows[ok], c] = np.log(np.maximum(obs.scores[ok, j], _TINY)) - logp[rows[ok], c]
        return out
    if not isinstance(obs, LabelsObservation):
        raise TypeError(f"no calibration for a {type(obs).__name__}")
    c = obs.labels[:, 0]
    ok = (c >= 0) & (c != target)
    lead = np.where(np.arange(logp.shape[1])[None, :] == c[:, None], -np.inf, logp).max(axis=1)
    cc = np.maximum(c, 0)
    gap = np.maximum(lead - logp[rows, cc] + _LABEL_MARGIN, 0.0)
    out[rows[ok], cc[ok]] = gap[ok]
    return out


@one_torch_thread
def surrogate_classes(surrogates: Sequence[Surrogate], shape: tuple[int, ...]) -> int:
    """The surrogates' class count: they must share one class space."""
    import torch

    ks = set()
    for s in surrogates:
        with torch.no_grad():
            ks.add(int(s.logits(torch.zeros((1, *shape))).shape[1]))
    if len(ks) != 1:
        raise UserInputError(f"the surrogates disagree on the number of classes: {sorted(ks)}")
    return ks.pop()


def class_masks(oracle: Oracle, ids: NDArray[np.int64], k: int) -> NDArray[np.bool_]:
    """(N, k): the surrogates' classes of each oracle class id (-1: none). A local target
    shares the surrogates' classes; a label API's label strings ("Crossword", "Dog") are
    matched to ImageNet classes through the target-side label index (the public WordNet
    hierarchy, :meth:`LabelIndex.classes_of`), whatever the API's wire schema. A label the
    surrogates cannot name is refused."""
    ids = np.asarray(ids, np.int64)
    out = np.zeros((len(ids), k), bool)
    names = oracle.class_names
    if isinstance(names, Vocabulary):
        index = _imagenet_labels(k)
        for i, c in enumerate(ids):  # once per run, not per step
            if c >= 0:
                label = names.name(int(c))
                classes = index.classes_of(label)
                if classes is None:
                    raise UserInputError(
                        f"the surrogates have no ImageNet class for the label {label!r}"
                    )
                out[i] = classes
        return out
    if oracle.num_classes != k:
        raise UserInputError(
            f"the surrogates give {k} classes and the target {oracle.num_classes}: "
            "they must share the target's classes"
        )
    rows = np.flatnonzero(ids >= 0)
    out[rows, ids[rows]] = True
    return out


@functools.cache
def _imagenet_labels(k: int) -> LabelIndex:
    """The ImageNet label index the surrogates' classes are named by."""
    if k != 1000:
        raise UserInputError("a label API target needs ImageNet surrogates (1,000 classes)")
    return LabelIndex.from_class_names(imagenet_classes())
