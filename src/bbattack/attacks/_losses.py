"""Losses on a full score vector, shared by the score-based attacks. All are descended.

Scores arrive as probabilities; their logs differ from the logits by one constant per row, so
a margin on log-probabilities is the logit margin (Carlini-Wagner) that the attacks' papers
use, recovered without the logits.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

from ..oracle import Observation, ScoresObservation, TopKObservation

__all__ = ["Loss", "goal_loss", "score_loss", "visible_margin"]

Loss = Literal["margin", "ce"]
_TINY = 1e-30  # float32 softmax underflows to 0; the log stays finite


def score_loss(
    obs: ScoresObservation, target: NDArray[np.int64], orig: NDArray[np.int64], loss: Loss
) -> NDArray[np.float64]:
    """Per row. Targeted (target ≥ 0): margin max_{j≠t} log p_j − log p_t (< 0 exactly when
    the target is the top label) or cross-entropy −log p_t. Untargeted (target −1): margin
    log p_y − max_{j≠y} log p_j for the clean label y (< 0 once it is no longer on top) or
    log p_y."""
    logp = np.log(np.maximum(obs.probs.astype(np.float64), _TINY))
    n = len(logp)
    targeted = np.asarray(target) >= 0
    cls = np.where(targeted, target, orig)
    rows = np.arange(n)
    own = logp[rows, cls]
    if loss == "ce":
        return np.asarray(np.where(targeted, -own, own))
    other = logp.copy()
    other[rows, cls] = -np.inf
    best_other = other.max(axis=1)
    return np.asarray(np.where(targeted, best_other - own, own - best_other))


def goal_loss(
    obs: ScoresObservation,
    target: NDArray[np.int64],
    orig: NDArray[np.int64],
    targeted: Loss,
    untargeted: Loss,
) -> NDArray[np.float64]:
    """Per row: the ``targeted`` loss where a target is set, else the ``untargeted`` one."""
    t = np.asarray(target)
    tl = score_loss(obs, t, orig, targeted)
    return np.asarray(np.where(t >= 0, tl, score_loss(obs, t, orig, untargeted)))


def visible_margin(obs: Observation, target: NDArray[np.int64]) -> NDArray[np.float64]:
    """log p(target) − log p(strongest other class), from what the view reveals: for a top-k
    view the unseen classes share at most 1 − Σ(revealed), which bounds the strongest of them
    (with k = 1 the margin is log p − log(1 − p)). −inf where the target is not revealed."""
    t = np.asarray(target, np.int64)
    if isinstance(obs, ScoresObservation):
        p = obs.probs.astype(np.float64)
        pt = p[np.arange(len(p)), t]
        other = np.where(np.arange(p.shape[1])[None, :] == t[:, None], -1.0, p).max(axis=1)
    elif isinstance(obs, TopKObservation):
        s = np.where(obs.labels >= 0, obs.scores, 0.0).astype(np.float64)
        mine = obs.labels == t[:, None]
        pt = np.where(mine, s, 0.0).sum(axis=1)
        seen = np.where(mine, 0.0, s).max(axis=1, initial=0.0)
        other = np.maximum(seen, np.clip(1.0 - s.sum(axis=1), 0.0, 1.0))
        pt = np.where(mine.any(axis=1), pt, 0.0)
    else:
        raise TypeError("PI-Square needs scores: a TopK or Scores view")
    with np.errstate(divide="ignore"):
        out = np.log(pt) - np.log(np.maximum(other, 1e-12))
    return np.asarray(np.where(pt > 0, out, -np.inf))
