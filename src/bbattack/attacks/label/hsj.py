"""HopSkipJump (Chen, Jordan, Wainwright, IEEE S&P 2020): a decision-based attack that walks
along the decision boundary towards the source image, written from the paper."""

from __future__ import annotations

import math
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

__all__ = ["HSJ_2020", "HSJState", "HopSkipJumpAttack", "HopSkipJumpConfig"]

HSJ_2020 = Paper(
    title="HopSkipJumpAttack: A Query-Efficient Decision-Based Attack",
    authors="Chen, Jordan, Wainwright",
    venue="IEEE S&P 2020",
    arxiv="1904.02144",
)

_CHUNK = 256  # images per probe query: bounds memory (a probe is a full image)
_F32 = 1e-7  # float32's resolution near 1: the binary search's finest step


class HopSkipJumpConfig(AttackConfig):
    """The paper's schedules (§4, Alg. 2): n_t = init_evals·√t probes, capped at max_evals;
    probe radius 0.1 at t = 1, then d·θ·dist (L∞) or √d·θ·dist (L2) with θ = γ/d² (L∞) or
    γ/d^1.5 (L2), which is also the binary search's threshold; step ξ = dist/√t, halved
    until the step lands on the adversarial side."""

    init_evals: int = Field(100, ge=1, le=100_000, description="probes at the first iteration")
    max_evals: int = Field(10_000, ge=1, le=1_000_000, description="most probes per iteration")
    gamma: float = Field(1.0, gt=0.0, description="sets θ, the boundary tolerance")
    max_halvings: int = Field(20, ge=1, le=60, description="step-size halvings per iteration")
    noise_tries: int = Field(
        20, ge=1, le=1_000, description="untargeted: uniform-noise start images tried"
    )


@dataclass
class HSJState(PlainState):
    """HopSkipJump's own state (row i = image i)."""

    t: IntArray  # the iteration, from 1: sets the probe count, radius and step
    dist: NDArray[np.float64]  # the boundary point's distance to x0 (inf: none yet)


@register(
    "hsj",
    rank=110,
    paper=HSJ_2020,
    views=("labels", "topk", "scores"),
    norms=("linf", "l2"),
    needs_start=True,
    budget=20_000,
)
class HopSkipJumpAttack(Attack[HopSkipJumpConfig]):
    """HopSkipJump: from an adversarial point (a start image of the target class, or
    untargeted a uniform-noise image), a binary search towards the source finds the boundary;
    there the sign of the mean of n_t label-only probes (with a baseline) estimates the
    boundary's normal; a geometric step along it (its sign under L∞), halved until it stays
    adversarial, then another binary search, give the next boundary point. The attack
    succeeds when the 8-bit boundary point, projected into the ε-ball, keeps the goal.

    Paper: Chen, Jordan, Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based
    Attack", IEEE S&P 2020 (arXiv:1904.02144), Alg. 1-2.
    Threat model: label-only (any view: only the goal's yes/no is used); targeted from a
    start image, or untargeted. Norms: L∞ and L2.
    Query cost per step (one iteration): n_t probes (``probe``), the step-size search and
    the binary search (``line_search``, ``binary_search``, about log2(1/θ) each); the
    search's first probe is the point at ε (``success_check``). Also: 1 clean query, the
    start image's check (targeted) or the noise starts (untargeted), 1 final check. Probes are float
    images, as in the paper: a target that quantises to 8 bits (an HTTP label API) loses
    the tiny ones.
    """

    config_class = HopSkipJumpConfig

    def init_queries(self, start_given: bool) -> int:
        return 2

    def _theta(self, d: int) -> float:
        c = self.config
        return c.gamma / (d**2 if c.norm == "linf" else d**1.5)

    def init(self, oracle: Oracle, state: AttackState, start: FloatArray | None) -> None:
        self.clean_query(oracle, state)
        state.own = self.prepare(state)
        rows, found = decision_starts(self, oracle, state, start, self.config.noise_tries)
        if len(rows):
            state.x[rows] = found
            self._boundary(oracle, state, rows)

    def prepare(self, state: AttackState) -> HSJState:
        """HopSkipJump's own state for every row of ``state`` (no queries; ``state`` is left
        as it is): the first iteration, no boundary point yet."""
        n = len(state.x)
        return HSJState(t=np.ones(n, np.int64), dist=np.full(n, np.inf))

    def adopt(self, state: AttackState, rows: IntArray) -> None:
        """HopSkipJump takes over ``rows`` (``state.own`` an :class:`HSJState`) from the
        adversarial images in ``state.xq[rows]``: its next step estimates the boundary's
        normal there as at a first iteration (probe radius 0.1, step dist/√1); no queries."""
        own = self.own(state, HSJState)
        state.x[rows] = state.xq[rows]
        own.dist[rows] = state.ball.distance(state.xq[rows], state.x0[rows])
        own.t[rows] = 1

    # -- the pieces of an iteration

    def _adv(self, oracle: Oracle, state: AttackState, rows: IntArray, x: Any, kind: Any) -> Any:
        obs = oracle.query(np.asarray(x, np.float32), state.ids[rows], kind)
        return self.goal_hit(state, obs, rows)

    def _boundary(self, oracle: Oracle, state: AttackState, rows: IntArray) -> None:
        """Binary search between the source and ``state.x`` (adversarial) on the blend (L2)
        or the L∞ ball's radius (L∞), to the threshold θ; ``state.x`` becomes the adversarial
        end. Its first probe is the point at ε, on the 8-bit grid (``success_check``): where
        it keeps the goal the attack has succeeded; otherwise the search runs above ε. Rows
        that cannot pay a probe stop."""
        own = self.own(state, HSJState)
        rows = rows[self._at_eps(oracle, state, rows)]
        if not len(rows):
            return
        x0, xa = state.x0[rows], state.x[rows].astype(np.float64)
        linf = self.config.norm == "linf"
        dist = state.ball.distance(xa, x0)
        hi = dist.copy() if linf else np.ones(len(rows))
        lo = np.minimum(self.config.eps / np.maximum(1.0 if linf else dist, 1e-12), hi)
        tol = self._theta(int(np.prod(state.x.shape[1:])))
        # θ in the blend (L2) or θ·dist on the radius (L∞), floored at float32's resolution:
        # a finer search would ask the same image again.
        tol_r = np.maximum(tol * np.minimum(dist, 1.0) if linf else np.full(len(rows), tol), _F32)
        live = np.ones(len(rows), bool)
        while True:
            live &= (hi - lo > tol_r) & state.active[rows]
            j = np.flatnonzero(live)
            if not len(j):
                break
            pay = self.can_pay(oracle, state, rows[j], 1)
            self.stop(state, rows[j[~pay]], "budget")
            j = j[pay]
            if not len(j):
                break
            mid = (lo[j] + hi[j]) / 2
            cand = self._blend(x0[j], xa[j], mid)
            adv = self._adv(oracle, state, rows[j], cand, QueryKind.BINARY_SEARCH)
            hi[j] = np.where(adv, mid, hi[j])
            lo[j] = np.where(adv, lo[j], mid)
        xb = self._blend(x0, xa, hi)
        state.x[rows] = state.xq[rows] = xb
        own.dist[rows] = state.ball.distance(xb, x0)
        # The saved image of a run that ends here: the boundary point, within its own radius.
        state.eps[rows] = own.dist[rows] + 1e-6

    def _at_eps(self, oracle: Oracle, state: AttackState, rows: IntArray) -> BoolArray:
        """Query the point of the search path at ε, 8-bit and inside the ε-ball; mark the
        rows it succeeds for. True for the rows whose search goes on."""
        pay = self.can_pay(oracle, state, rows, 1)
        self.stop(state, rows[~pay], "budget")
        r = rows[pay]
        if len(r):
            eps = np.full(len(r), self.config.eps, np.float32)
            xa = state.x[r]
            if self.config.norm == "linf":
                at = self._blend(state.x0[r], xa, eps.astype(np.float64))
            else:
                a = eps / np.maximum(state.ball.distance(xa, state.x0[r]), 1e-12)
                at = self._blend(state.x0[r], xa, np.minimum(a, 1.0))
            xq = self.quantized(state, r, at, eps)
            obs = oracle.query(xq, state.ids[r], QueryKind.SUCCESS_CHECK)
            hit = self.goal_hit(state, obs, r)
            state.xq[r[hit]] = xq[hit]
            state.eps[r[hit]] = self.config.eps
            self.mark_success(oracle, state, r, hit)
        return np.asarray(state.active[rows])

    def _blend(self, x0: FloatArray, x: Any, a: NDArray[np.float64]) -> FloatArray:
        if self.config.norm == "linf":
            r = a.reshape(-1, 1, 1, 1)
            return np.asarray(np.clip(x, x0 - r, x0 + r), np.float32)
        w = a.reshape(-1, 1, 1, 1)
        return np.asarray((1.0 - w) * x0 + w * x, np.float32)

    def _estimate(
        self, oracle: Oracle, state: AttackState, rows: IntArray, n_probes: int
    ) -> NDArray[np.float32]:
        """The mean of n_probes probes u_b weighted by (φ_b − mean φ) (Alg. 2, eq. 16)."""
        import torch

        own = self.own(state, HSJState)
        d = int(np.prod(state.x.shape[1:]))
        theta = self._theta(d)
        t = own.t[rows]
        scale = d if self.config.norm == "linf" else math.sqrt(d)
        delta = np.where(t == 1, 0.1, scale * theta * own.dist[rows]).astype(np.float32)
        xb = state.x[rows]
        acc = np.zeros_like(xb)
        mean_u = np.zeros_like(xb)
        sum_phi = np.zeros(len(rows))
        per = max(_CHUNK // max(len(rows), 1), 1)
        for k0 in range(0, n_probes, per):
            k = min(per, n_probes - k0)
            u = np.empty((len(rows), k, *xb.shape[1:]), np.float32)
            for j, r in enumerate(rows):  # each image draws from its own stream
                draw = torch.from_numpy(u[j])
                if self.config.norm == "linf":
                    draw.uniform_(-1.0, 1.0, generator=state.rngs[int(r)])
                else:
                    draw.normal_(generator=state.rngs[int(r)])
            norm = np.sqrt((u.reshape(len(rows), k, -1) ** 2).sum(axis=2))
            u /= np.maximum(norm, 1e-12).reshape(len(rows), k, 1, 1, 1)
            probe = np.clip(xb[:, None] + delta.reshape(-1, 1, 1, 1, 1) * u, 0.0, 1.0)
            u = (probe - xb[:, None]) / delta.reshape(-1, 1, 1, 1, 1)
            adv = self._adv(
                oracle,
                state,
                np.repeat(rows, k),
                probe.reshape(-1, *xb.shape[1:]),
                QueryKind.PROBE,
            ).reshape(len(rows), k)
            phi = np.where(adv, 1.0, -1.0)
            acc += (phi[:, :, None, None, None] * u).sum(axis=1)
            mean_u += u.sum(axis=1)
            sum_phi += phi.sum(axis=1)
        m = (sum_phi / n_probes).reshape(-1, 1, 1, 1)
        # Baseline: subtract the mean answer; when every probe agreed, keep its sign.
        g = np.where(np.abs(m) == 1.0, m * mean_u, acc - m * mean_u) / n_probes
        return np.asarray(g, np.float32)

    # -- step

    def step(self, oracle: Oracle, state: AttackState) -> None:
        own = self.own(state, HSJState)
        rows = np.flatnonzero(state.active)
        if not len(rows):
            return
        c = self.config
        t = int(own.t[rows].max())
        n_probes = min(int(c.init_evals * math.sqrt(t)), c.max_evals)
        # An iteration needs its probes, a step, a binary search and a check.
        ok = self.can_pay(oracle, state, rows, n_probes + 2)
        self.stop(state, rows[~ok], "budget")
        rows = rows[ok]
        if not len(rows):
            return
        g = self._estimate(oracle, state, rows, n_probes)
        if c.norm == "linf":
            v = np.sign(g)
        else:
            v = g / np.maximum(np.sqrt((g.reshape(len(rows), -1) ** 2).sum(1)), 1e-12).reshape(
                -1, 1, 1, 1
            )
        xi = own.dist[rows] / np.sqrt(own.t[rows])
        self._step_search(oracle, state, rows, v.astype(np.float32), xi)
        live = rows[state.active[rows]]
        self._boundary(oracle, state, live)
        own.t[live] += 1

    def _step_search(
        self,
        oracle: Oracle,
        state: AttackState,
        rows: IntArray,
        v: FloatArray,
        xi: NDArray[np.float64],
    ) -> None:
        """Halve ξ until x + ξ·v is adversarial; rows that never get there keep x."""
        left = np.arange(len(rows))
        for _ in range(self.config.max_halvings):
            pay = self.can_pay(oracle, state, rows[left], 1)
            self.stop(state, rows[left[~pay]], "budget")
            left = left[pay]
            if not len(left):
                return
            r = rows[left]
            cand = np.clip(state.x[r] + xi[left].reshape(-1, 1, 1, 1) * v[left], 0.0, 1.0)
            adv: BoolArray = self._adv(oracle, state, r, cand, QueryKind.LINE_SEARCH)
            state.x[r[adv]] = cand[adv]
            xi[left] /= 2.0
            left = left[~adv]
            if not len(left):
                return
