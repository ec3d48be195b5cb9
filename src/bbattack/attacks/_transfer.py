"""Surrogate-side computation for surrogate-guided attacks: targeted or untargeted MI-FGSM with
input diversity on a weighted surrogate ensemble. No oracle in here: surrogates are free.

Input diversity draws one random resize-and-pad per iteration for the whole batch, from a
stream keyed by the iteration alone, so an image gets the same transforms in any batch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..errors import UserInputError
from ..oracle import Oracle
from ..surrogates import Surrogate
from ..targets import Vocabulary
from .balls import Ball

__all__ = ["Craft", "class_masks", "craft"]

FloatArray = NDArray[np.float32]
TransferLoss = Literal["logit", "ce"]


@dataclass(frozen=True)
class Craft:
    """How perturbations are crafted on the surrogates."""

    iters: int = 40
    step: float = 0.125  # step size as a fraction of the radius
    momentum: float = 1.0
    diversity: float = 0.7  # probability of a random resize-and-pad per iteration
    loss: TransferLoss = "logit"
    seed: int = 0  # the input-diversity stream


def craft(
    surrogates: Sequence[Surrogate],
    weights: NDArray[np.float64],
    x0: FloatArray,
    x: FloatArray,
    classes: NDArray[np.bool_],
    targeted: NDArray[np.bool_],
    radius: NDArray[np.floating],
    ball: Ball,
    how: Craft,
    iters: int | None = None,
) -> FloatArray:
    """Move ``x`` (inside the ball of ``radius`` around ``x0``) to raise the weighted
    surrogate ensemble's score of ``classes`` (N, K) where ``targeted``, to lower it elsewhere
    (the clean class of an untargeted run). A row of ``classes`` may mark several classes (a
    label API's "Dog" is every breed): their score is the log-sum-exp of their logits.

    ``weights`` (N, S): one weight per image and surrogate. Returns float images inside the
    ball (not quantised).
    """
    import torch

    n = len(x0)
    if n == 0:
        return x.copy()
    t0 = torch.from_numpy(np.ascontiguousarray(x0, np.float32))
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).clone()
    r = torch.from_numpy(np.asarray(radius, np.float32)).view(n, 1, 1, 1)
    w = torch.from_numpy(np.asarray(weights, np.float32))
    mask = torch.from_numpy(np.asarray(classes, bool))
    sign = torch.from_numpy(np.where(targeted, 1.0, -1.0).astype(np.float32))  # raise / lower
    g = torch.zeros_like(xt)
    alpha = r * how.step
    linf = ball.norm == "linf"
    stream = np.random.default_rng([how.seed, 0x7A])
    for _ in range(how.iters if iters is None else iters):
        xt.requires_grad_(True)
        xi = _diverse(xt, stream, how.diversity)
        obj = xt.new_zeros(n)
        for k, s in enumerate(surrogates):
            z = s.logits(xi)
            score = torch.logsumexp(z.masked_fill(~mask, float("-inf")), dim=1)
            if how.loss == "ce":
                score = score - torch.logsumexp(z, dim=1)
            obj = obj + w[:, k] * sign * score
        (grad,) = torch.autograd.grad(obj.sum(), xt)
        with torch.no_grad():
            if linf:
                l1 = grad.abs().flatten(1).mean(1).clamp_min(1e-12).view(n, 1, 1, 1)
                g = how.momentum * g + grad / l1
                xt = xt + alpha * g.sign()
                xt = torch.minimum(torch.maximum(xt, t0 - r), t0 + r).clamp(0.0, 1.0)
            else:
                l2 = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(n, 1, 1, 1)
                g = how.momentum * g + grad / l2
                gn = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(n, 1, 1, 1)
                d = xt + alpha * g / gn - t0
                dn = d.flatten(1).norm(dim=1).clamp_min(1e-12).view(n, 1, 1, 1)
                xt = (t0 + d * torch.clamp(r / dn, max=1.0)).clamp(0.0, 1.0)
    out: FloatArray = xt.detach().numpy().astype(np.float32)
    return out


def class_masks(oracle: Oracle, ids: NDArray[np.int64], k: int) -> NDArray[np.bool_]:
    """(N, k): the surrogates' classes of each oracle class id (-1: none). A local target
    shares the surrogates' classes; a label API's label strings ("Crossword", "Dog") are
    matched to ImageNet classes through the public WordNet hierarchy, as its own service
    builds them. A label the surrogates cannot name is refused."""
    ids = np.asarray(ids, np.int64)
    out = np.zeros((len(ids), k), bool)
    names = oracle.class_names
    if isinstance(names, Vocabulary):
        index = _imagenet_labels(k)
        for i, c in enumerate(ids):  # once per run, not per step
            if c >= 0:
                label = names.name(int(c))
                if label.casefold() not in index:
                    raise UserInputError(
                        f"the surrogates have no ImageNet class for the label {label!r}"
                    )
                out[i] = index[label.casefold()]
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
def _imagenet_labels(k: int) -> dict[str, NDArray[np.bool_]]:
    """Label description (casefolded) -> the ImageNet classes it covers."""
    from ..classes import imagenet_classes
    from ..service.labels import LabelIndex

    if k != 1000:
        raise UserInputError("a label API target needs ImageNet surrogates (1,000 classes)")
    index = LabelIndex.from_class_names(imagenet_classes())
    out: dict[str, NDArray[np.bool_]] = {}
    for d, row in zip(index.descriptions, index.membership > 0, strict=True):
        key = d.casefold()
        out[key] = out[key] | row if key in out else row
    return out


def _diverse(x: Any, stream: np.random.Generator, p: float) -> Any:
    """Xie et al. (CVPR 2019) input diversity: shrink by up to 10% and pad at random."""
    import torch

    u, size_u, left_u, top_u = stream.random(4)
    if u >= p:
        return x
    h = x.shape[-1]
    s = int(h - 1 - size_u * (h // 10))
    pad = h - s
    left, top = int(left_u * (pad + 1)), int(top_u * (pad + 1))
    small = torch.nn.functional.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
    return torch.nn.functional.pad(small, (left, pad - left, top, pad - top))
