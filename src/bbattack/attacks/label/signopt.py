"""Sign-OPT (Cheng, Singh, Chen, Chen, Liu, Hsieh, ICLR 2020): a hard-label attack that
minimises the distance to the decision boundary over search directions, with one query per
sign of a directional derivative, written from the paper."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from ...oracle import Oracle, QueryKind
from .._plain import PlainState
from .._start import decision_starts
from ..base import Attack, AttackConfig, AttackState, BoolArray, FloatArray, IntArray
from ..registry import Paper, register

__all__ = ["SIGNOPT_2020", "SignOPTAttack", "SignOPTConfig", "SignOPTState"]

SIGNOPT_2020 = Paper(
    title="Sign-OPT: A Query-Efficient Hard-label Adversarial Attack",
    authors="Cheng, Singh, Chen, Chen, Liu, Hsieh",
    venue="ICLR 2020",
    arxiv="1909.10773",
)

_PER = 8  # probes drawn and sent per image at a time: the same draws in a batch as alone
_ROWS = 32  # images per probe query (with _PER: at most 256 full images in memory)
_F64 = NDArray[np.float64]
_BELOW = 0.9  # the binary search's floor, as a fraction of ε


class SignOPTConfig(AttackConfig):
    """The paper's settings (§4 and App.): K = 200 sign queries per gradient estimate, probe
    size β = 0.001 on the unit direction, step η = 0.2; a step that does not bring the
    boundary nearer is retried at η/4, and after ``max_tries`` misses β shrinks tenfold and η
    starts over."""

    probes: int = Field(200, ge=1, le=100_000, description="K: sign queries per estimate")
    beta: float = Field(0.001, gt=0.0, le=1.0, description="probe size on the unit direction")
    step: float = Field(0.2, gt=0.0, le=100.0, description="first step η on the direction")
    max_tries: int = Field(8, ge=1, le=60, description="step tries (η quartered) per iteration")
    tol: float = Field(
        1e-3, gt=0.0, lt=1.0, description="binary search: stop at this gap relative to g"
    )
    noise_tries: int = Field(
        20, ge=1, le=1_000, description="untargeted: uniform-noise start images tried"
    )


@dataclass
class SignOPTState(PlainState):
    """Sign-OPT's own state (row i = image i)."""

    theta: NDArray[np.float32]  # the search direction, unit L2 norm (N, dim)
    g: _F64  # the boundary's distance along it, in the ball's norm (inf: none yet)
    eta: _F64  # the next step's size
    beta: _F64  # the probe size


@register(
    "sign-opt",
    rank=120,
    paper=SIGNOPT_2020,
    views=("labels", "topk", "scores"),
    norms=("l2", "linf"),
    needs_start=True,
    budget=20_000,
)
class SignOPTAttack(Attack[SignOPTConfig]):
    """Sign-OPT: the adversarial image is x0 + g(θ)·θ/‖θ‖ for a search direction θ, where
    g(θ) is the distance along θ to the decision boundary (found by binary search). Sign-OPT
    minimises g: the sign of g(θ + βu) − g(θ) costs one query (is x0 + g(θ)·(θ+βu)/‖θ+βu‖
    adversarial?), the mean of K such signs times u estimates the gradient, and a step
    against it is kept when the boundary along the new direction is no farther (one query
    at the old distance), then binary-searched. The attack succeeds when the boundary point,
    projected into the ε-ball on the 8-bit grid, keeps the goal (under L2: the point at ε
    along the direction; under L∞: the clipped point).

    Paper: Cheng, Singh, Chen, Chen, Liu, Hsieh, "Sign-OPT: A Query-Efficient Hard-label
    Adversarial Attack", ICLR 2020 (arXiv:1909.10773), Alg. 1; g(θ) as in OPT (Cheng et al.,
    ICLR 2019). Threat model: label-only (any view: only the goal's yes/no is used);
    targeted from a start image, or untargeted from uniform noise. Norms: L2 (the paper's)
    and L∞ (g measured along θ/‖θ‖∞).
    Query cost per step (one iteration): K sign probes (``probe``), 1 per step tried
    (``line_search``, at most ``max_tries``), then for a kept step the point at ε
    (``success_check``) and a binary search to ``tol``·g (``binary_search``, about
    log2(1/tol)). Also: 1 clean query, the start image's check (targeted) or the noise starts
    (untargeted), 1 final check. Probes are float images, as in the paper: a target that
    quantises to 8 bits (an HTTP label API) loses the tiny ones.
    """

    config_class = SignOPTConfig

    def init_queries(self, start_given: bool) -> int:
        return 2

    def init(self, oracle: Oracle, state: AttackState, start: FloatArray | None) -> None:
        self.clean_query(oracle, state)
        own = state.own = self.prepare(state)
        rows, found = decision_starts(self, oracle, state, start, self.config.noise_tries)
        if not len(rows):
            return
        v = (found.astype(np.float64) - state.x0[rows]).reshape(len(rows), -1)
        g = self._len(v)
        own.theta[rows] = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
        state.x[rows] = found
        state.eps[rows] = g + 1e-6
        self._search(oracle, state, rows, g)

    def prepare(self, state: AttackState) -> SignOPTState:
        """Sign-OPT's own state for every row of ``state`` (no queries; ``state`` is left as
        it is): no direction yet, the configured probe size and step."""
        n, dim = len(state.x), int(np.prod(state.x.shape[1:]))
        return SignOPTState(
            theta=np.zeros((n, dim), np.float32),
            g=np.full(n, np.inf),
            eta=np.full(n, self.config.step),
            beta=np.full(n, self.config.beta),
        )

    # -- g(θ): the boundary along a direction

    def _len(self, v: _F64 | FloatArray) -> _F64:
        """‖v‖ in the ball's norm, per row."""
        a = np.asarray(v, np.float64)
        if self.config.norm == "linf":
            return np.asarray(np.abs(a).max(axis=1))
        return np.asarray(np.linalg.norm(a, axis=1))

    def _point(self, state: AttackState, rows: IntArray, theta: Any, lam: _F64) -> FloatArray:
        """x0 + λ·θ/‖θ‖ (the ball's norm), clipped to the image range."""
        t = np.asarray(theta, np.float32)
        scale = (lam / np.maximum(self._len(t), 1e-12)).astype(np.float32)
        x = state.x0[rows] + (scale[:, None] * t).reshape(state.x0[rows].shape)
        return np.asarray(np.clip(x, 0.0, 1.0), np.float32)

    def _adv(self, oracle: Oracle, state: AttackState, rows: IntArray, x: Any, kind: Any) -> Any:
        obs = oracle.query(np.asarray(x, np.float32), state.ids[rows], kind)
        return self.goal_hit(state, obs, rows)

    def _search(self, oracle: Oracle, state: AttackState, rows: IntArray, hi: _F64) -> None:
        """For ``rows`` whose point at ``hi`` along their direction is adversarial: query the
        8-bit point at ε (success), else binary-search g in (0.9ε, hi] to ``tol``·hi. The
        adversarial end becomes ``state.x`` and the run's fallback image."""
        own, eps = self.own(state, SignOPTState), self.config.eps
        pay = self.can_pay(oracle, state, rows, 1)
        self.stop(state, rows[~pay], "budget")
        rows, hi = rows[pay], hi[pay].copy()
        if not len(rows):
            return
        theta = own.theta[rows]
        # The adversarial end projected into the ε-ball: under L2 the point at ε along θ;
        # under L∞ the clipped point, nearer the vertices where L∞ adversaries lie.
        end = self._point(state, rows, theta, hi)
        xq = self.quantized(state, rows, end, np.full(len(rows), eps, np.float32))
        obs = oracle.query(xq, state.ids[rows], QueryKind.SUCCESS_CHECK)
        hit = self.goal_hit(state, obs, rows)
        state.xq[rows[hit]] = xq[hit]
        state.eps[rows[hit]] = eps
        self.mark_success(oracle, state, rows, hit)
        # Below ε too: a boundary just under ε can still fail as an 8-bit image, and the
        # probes must then see the true g, not ε.
        lo = np.full(len(rows), eps * _BELOW)
        live = ~hit
        while True:
            live &= (hi - lo > self.config.tol * hi) & state.active[rows]
            j = np.flatnonzero(live)
            if not len(j):
                break
            pay = self.can_pay(oracle, state, rows[j], 1)
            self.stop(state, rows[j[~pay]], "budget")
            j = j[pay]
            if not len(j):
                break
            mid = (lo[j] + hi[j]) / 2
            x = self._point(state, rows[j], theta[j], mid)
            adv = self._adv(oracle, state, rows[j], x, QueryKind.BINARY_SEARCH)
            hi[j] = np.where(adv, mid, hi[j])
            lo[j] = np.where(adv, lo[j], mid)
        r = rows[~hit]
        own.g[r] = hi[~hit]
        state.x[r] = state.xq[r] = self._point(state, r, theta[~hit], hi[~hit])
        state.eps[r] = hi[~hit] + 1e-6

    # -- step

    def _signs(self, oracle: Oracle, state: AttackState, rows: IntArray) -> FloatArray:
        """The sign estimate (1/K) Σ_q sign(g(θ + βu_q) − g(θ))·u_q, u_q unit Gaussians."""
        import torch

        own, k = self.own(state, SignOPTState), self.config.probes
        theta, g = own.theta[rows], own.g[rows]
        beta = own.beta[rows].astype(np.float32)
        acc = np.zeros_like(theta)
        for k0 in range(0, k, _PER):
            m = min(_PER, k - k0)
            for r0 in range(0, len(rows), _ROWS):
                sub = np.arange(r0, min(r0 + _ROWS, len(rows)))
                u = np.empty((len(sub), m, theta.shape[1]), np.float32)
                for j, i in enumerate(sub):  # each image draws from its own stream
                    torch.from_numpy(u[j]).normal_(generator=state.rngs[int(rows[i])])
                u /= np.maximum(np.linalg.norm(u, axis=2, keepdims=True), 1e-12)
                cand = (theta[sub, None] + beta[sub, None, None] * u).reshape(len(sub) * m, -1)
                rr = np.repeat(rows[sub], m)
                x = self._point(state, rr, cand, np.repeat(g[sub], m))
                adv = self._adv(oracle, state, rr, x, QueryKind.PROBE).reshape(len(sub), m)
                # Adversarial at the old distance: the boundary came nearer, g went down.
                sign = np.where(adv, -1.0, 1.0).astype(np.float32)
                acc[sub] += (sign[:, :, None] * u).sum(axis=1)
        return np.asarray(acc / k, np.float32)

    def step(self, oracle: Oracle, state: AttackState) -> None:
        own, c = self.own(state, SignOPTState), self.config
        # An iteration needs its probes, a step and the point at ε.
        rows = self.affordable_rows(oracle, state, c.probes + 2)
        if not len(rows):
            return
        grad = self._signs(oracle, state, rows)
        left = np.arange(len(rows))
        kept = np.zeros(len(rows), bool)
        new = np.zeros_like(grad)
        for _ in range(c.max_tries):
            pay = self.can_pay(oracle, state, rows[left], 2)
            self.stop(state, rows[left[~pay]], "budget")
            left = left[pay]
            if not len(left):
                break
            r = rows[left]
            cand = own.theta[r] - own.eta[r, None].astype(np.float32) * grad[left]
            cand /= np.maximum(np.linalg.norm(cand, axis=1, keepdims=True), 1e-12)
            adv: BoolArray = self._adv(
                oracle, state, r, self._point(state, r, cand, own.g[r]), QueryKind.LINE_SEARCH
            )
            new[left[adv]] = cand[adv]
            kept[left[adv]] = True
            own.eta[r] = np.where(adv, own.eta[r] * 2.0, own.eta[r] / 4.0)
            left = left[~adv]
            if not len(left):
                break
        # No step was kept: probe finer and start the step over (the paper's reset).
        miss = rows[~kept & state.active[rows]]
        own.beta[miss] = np.maximum(own.beta[miss] * 0.1, 1e-8)
        own.eta[miss] = c.step
        good = rows[kept & state.active[rows]]
        own.theta[good] = new[kept & state.active[rows]]
        self._search(oracle, state, good, own.g[good])
