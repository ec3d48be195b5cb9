"""AAA, "Adversarial Attack on Attackers" (Chen, Huang, Gu, Wu, Huang, Wang, NeurIPS 2022,
arXiv 2205.12134): post-process the scores so that a score-based attack's loss trend is
reversed near the model's outputs while the top label never changes.

Written from the paper's description (its linear attractor variant). The margin of an answer
is ``m = z1 - z2``, the log-probability of the top class minus that of the runner-up (>= 0).
Attractors sit at the middle of every interval ``[k tau, (k + 1) tau)``; within an interval the
margin is mirrored about its attractor and shrunk by ``beta``::

    c = (floor(m / tau) + 1/2) tau        m' = c - beta (m - c)

so a change that lowers the true margin (what an untargeted attack wants) raises the margin it
is shown, and the other way round: the attack's greedy steps go uphill, towards the top of the
interval, away from the decision boundary. m' >= tau (1 - beta) / 2 > 0 for every m, so the top
class keeps the highest score: the top label never changes, and clean accuracy is untouched.
The answer is rebuilt by setting the top class's log-probability to ``z2 + m'`` (every other
class keeps its own) and normalising again. We keep the paper's idea and leave out its
calibration step (matching the confidence of the original answer).

Only full scores (the ``scores`` view) are post-processed; under top-k and label views the
answer passes unchanged (a label-only attack never sees scores, so AAA cannot touch it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import UserInputError
from ..oracle import Forward, Middleware, Observation, Query, ScoresObservation, frozen_array

__all__ = ["Aaa", "attract", "fits", "unattract"]


def attract(
    probs: NDArray[np.floating], tau: float = 4.0, beta: float = 0.8
) -> NDArray[np.float32]:
    """AAA's answer for probability rows (N, K): same top class, reversed margin trend."""
    return _remargin(probs, lambda m, c: c - beta * (m - c), tau)


def unattract(
    probs: NDArray[np.floating], tau: float = 4.0, beta: float = 0.8
) -> NDArray[np.float32]:
    """The inverse of :func:`attract` for an attacker who knows ``tau`` and ``beta``: a
    shown margin m' lies in (c - beta tau / 2, c + beta tau / 2] about its interval's
    attractor c, the intervals never overlap (beta < 1), so ``floor(m' / tau)`` names the
    interval and ``m = c - (m' - c) / beta`` the true margin. Every other class kept its
    log-probability up to the normalisation, so setting the top class's back and
    normalising again returns the model's answer (to float32 precision)."""
    return _remargin(probs, lambda m, c: c - (m - c) / beta, tau)


def fits(
    probs: NDArray[np.floating], tau: float = 4.0, beta: float = 0.8, tol: float = 1e-3
) -> NDArray[np.bool_]:
    """Whether each answer (N, K) could have come from AAA at ``tau`` and ``beta``: its
    margin m' must lie in (c - beta tau / 2, c + beta tau / 2] about its interval's attractor,
    so the gaps between those ranges (a fraction 1 - beta of every interval) never show. An
    answer in a gap proves the assumed settings wrong (or AAA absent). ``tol``: in units of
    tau, for float32 rounding."""
    p = np.asarray(probs, np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        return np.ones(len(p), bool)
    z = np.sort(np.log(np.maximum(p, 1e-300)), axis=1)
    u = (z[:, -1] - z[:, -2]) / tau
    frac = u - np.floor(u)
    out: NDArray[np.bool_] = (frac > (1 - beta) / 2 - tol) & (frac <= (1 + beta) / 2 + tol)
    return out


def _remargin(
    probs: NDArray[np.floating],
    move: Callable[[NDArray[np.float64], NDArray[np.float64]], NDArray[np.float64]],
    tau: float,
) -> NDArray[np.float32]:
    """Each row's top-class log-probability set to the runner-up's plus ``move(m, c)`` (m:
    the margin, c: its interval's attractor), then normalised again."""
    p = np.asarray(probs, np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        return np.asarray(p, np.float32)
    z = np.log(np.maximum(p, 1e-300))
    rows = np.arange(len(z))
    top = z.argmax(axis=1)
    second = np.where(np.arange(z.shape[1])[None] == top[:, None], -np.inf, z).max(axis=1)
    m = z[rows, top] - second
    z[rows, top] = second + move(m, (np.floor(m / tau) + 0.5) * tau)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True), np.float32)


class Aaa(Middleware):
    """AAA score post-processing in front of the attack."""

    name = "aaa"

    def __init__(self, tau: float = 4.0, beta: float = 0.8) -> None:
        if not tau > 0:
            raise UserInputError(f"aaa: tau must be > 0, got {tau}")
        if not (0.0 <= beta < 1.0):
            raise UserInputError(f"aaa: beta must be in [0, 1), got {beta}")
        self.tau, self.beta = tau, beta

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "tau": self.tau, "beta": self.beta}

    def handle(self, query: Query, forward: Forward) -> Observation:
        obs = forward(query.x)
        if not isinstance(obs, ScoresObservation) or not len(obs):
            return obs
        return ScoresObservation(frozen_array(attract(obs.probs, self.tau, self.beta)))
