"""Square Attack (Andriushchenko, Croce, Flammarion, Hein, ECCV 2020): random search over
square windows, L∞ and L2, written from the paper."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, model_validator

from ...oracle import Oracle, QueryKind, ScoresObservation
from .._losses import Loss, goal_loss
from .._plain import PlainState
from .._rand import Streams
from .._windows import bumps, paper_p, positions, side, window_mask
from ..base import Attack, AttackConfig, AttackState, FloatArray, IntArray
from ..registry import Paper, register

__all__ = ["SQUARE_2020", "SquareAttack", "SquareConfig", "SquareState"]

SQUARE_2020 = Paper(
    title="Square Attack: a query-efficient black-box adversarial attack via random search",
    authors="Andriushchenko, Croce, Flammarion, Hein",
    venue="ECCV 2020",
    arxiv="1912.00049",
)

Preset = Literal["default", "paper"]
# What each preset fills in where a field is not given. "paper": §3 and App. A of the paper.
# "default": measured on EfficientNet-Lite0, 8 photos, targeted L∞ 0.05, 10k (BENCHMARKS.md):
# median queries CE 1,097 vs margin 1,320 at p_init 0.05; p_init 0.03 gives 868 (0.02: 913).
# min_schedule: the paper rescales its schedule to any budget; compressing it below 10k shrinks
# the windows too soon (untargeted, 300 queries: camera flips at 264 against 60 uncompressed;
# 200 queries: not at all).
_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"targeted_loss": "ce", "schedule": "paper", "min_schedule": 1},
    "default": {"targeted_loss": "ce", "schedule": "paper", "min_schedule": 10_000},
}
# Untargeted, p_init 0.03 left 2 of 8 photos unflipped after 300 queries; 0.05 flips all.
_PAPER_P = {"linf": (0.05, 0.05), "l2": (0.1, 0.1)}  # (targeted, untargeted)
_DEFAULT_P = {"linf": (0.03, 0.05), "l2": (0.1, 0.1)}
_MAX_HALVINGS = 9  # the paper's schedule ends at p_init / 2^9


class SquareConfig(AttackConfig):
    """Square Attack hyperparameters. ``preset="paper"`` gives the paper's settings; fields
    given explicitly win over the preset."""

    preset: Preset = Field("default", description="default (measured best) or paper")
    p_init: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="initial window area as a fraction of the image, targeted runs (None: "
        "the preset's; default 0.03 for L∞ and 0.1 for L2, paper 0.05 and 0.1)",
    )
    p_init_untargeted: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="the same for untargeted runs (None: 0.05 for L∞ and 0.1 for L2)",
    )
    targeted_loss: Loss = Field(
        "ce", description="targeted loss on log-probabilities: ce (the paper's) or margin"
    )
    untargeted_loss: Loss = Field("margin", description="untargeted loss (the paper: margin)")
    schedule: Literal["paper", "adaptive"] = Field(
        "paper",
        description="the p schedule: paper (halvings at fixed iterations) or adaptive (p "
        "halves after `stall_steps` steps without a kept window, per image)",
    )
    stall_steps: int = Field(
        100, ge=1, description="adaptive schedule: steps without a kept window before p halves"
    )
    reuse: bool = Field(
        False, description="after a kept window, propose the next one at the same position"
    )
    schedule_queries: int | None = Field(
        None, ge=1, description="queries the p schedule is stretched over (None: the budget)"
    )
    min_schedule: int = Field(
        10_000,
        ge=1,
        description="the p schedule is never compressed below this many queries (the paper "
        "compresses it to any budget: preset=paper sets 1)",
    )

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = data.get("preset", "default")
        filled = {**_PRESETS.get(preset, {}), **data}
        norm = data.get("norm", "linf")
        if norm in _PAPER_P:
            ps = (_PAPER_P if preset == "paper" else _DEFAULT_P)[norm]
            for key, p in zip(("p_init", "p_init_untargeted"), ps, strict=True):
                if filled.get(key) is None:
                    filled[key] = p
        return filled

    def initial_p(self, targeted: NDArray[np.bool_]) -> NDArray[np.float64]:
        """Per image: the initial window fraction for its goal."""
        t, u = _DEFAULT_P[self.norm]
        return np.where(targeted, self.p_init or t, self.p_init_untargeted or u)


@dataclass
class SquareState(PlainState):
    """Square's own state, one row per image."""

    rng: Streams  # the window, position and sign draws
    n_iters: IntArray  # the p schedule's length (queries it is spread over)
    halvings: IntArray  # adaptive schedule: p = p_init / 2^halvings
    since: IntArray  # steps since the last kept window
    last_rc: IntArray  # (N, 2) reuse: the kept window's corner, -1 where none
    hi: FloatArray | None  # L∞: the ball's upper vertices on the 8-bit grid (None under L2)
    lo: FloatArray | None  # L∞: the lower vertices


@register(
    "square",
    rank=30,
    paper=SQUARE_2020,
    views=("scores",),
    norms=("linf", "l2"),
    budget=10_000,
    default_for=("ql",),  # the best measured score-based attack (BENCHMARKS.md, score.toml)
    tuned="untargeted L∞: bbattack tune on the tuning split, 2026-12-07, 6 trials, defaults "
    "kept (benchmarks/results/tune-square-untargeted); targeted: chosen on the bundled photos "
    "(square-options.toml, score.toml), not yet searched on the tuning split",
)
class SquareAttack(Attack[SquareConfig]):
    """Square Attack: keep a random square-window change only if the loss goes down.

    Paper: Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient
    black-box adversarial attack via random search", ECCV 2020 (arXiv:1912.00049), Alg. 1-3.
    Threat model: full scores (``Scores`` view). Norms: L∞ (windows set to ±ε per channel,
    started from vertical stripes) and L2 (a pseudo-Gaussian bump moves the mass of two
    windows into one, started from a grid of bumps).
    Query cost per step: 1 (the candidate; its answer is also the success check).
    Also: 1 for the clean image, 1 for the start image, 1 for the final verification.
    Every candidate is an 8-bit image inside the ball: what is accepted is what is saved.
    """

    config_class = SquareConfig

    def init_queries(self, start_given: bool) -> int:
        return 2

    def _loss(self, obs: ScoresObservation, state: AttackState, rows: IntArray) -> Any:
        cfg = self.config
        t, o = state.target[rows], state.orig[rows]
        return goal_loss(obs, t, o, cfg.targeted_loss, cfg.untargeted_loss)

    def _observe(
        self, oracle: Oracle, state: AttackState, rows: IntArray, x: FloatArray, kind: QueryKind
    ) -> tuple[ScoresObservation, NDArray[np.float64]]:
        obs = self.query_scores(oracle, x, state.ids[rows], kind)
        return obs, self._loss(obs, state, rows)

    # -- init

    def init(self, oracle: Oracle, state: AttackState, start: FloatArray | None) -> None:
        ch, h, w = state.x.shape[1:]
        self.clean_query(oracle, state)
        own = state.own = self.prepare(oracle, state)
        rng = own.rng
        live = np.flatnonzero(state.active)
        if not len(live):
            return
        if own.hi is not None and own.lo is not None:  # L∞
            stripes = rng.signs(live, ch * w).reshape(-1, ch, 1, w)
            x = np.where(stripes > 0, own.hi[live], own.lo[live])
        else:
            x = self._l2_start(state, live, rng, ch, h, w)
        obs, loss = self._observe(oracle, state, live, x.astype(np.float32), QueryKind.INIT)
        state.x[live] = x
        state.xq[live] = x
        state.loss[live] = loss
        self.record(obs, state, live)
        self.mark_success(oracle, state, live, self.goal_hit(state, obs, live))

    def prepare(self, oracle: Oracle, state: AttackState) -> SquareState:
        """Square's own state for every row (no queries): the noise streams, the p
        schedule's length and, for L∞, the ball's vertices on the 8-bit grid. An attack that
        hands rows over to Square holds this state for them, then sets each row's iterate
        and its ``state.loss``."""
        n = len(state.x)
        c = self.config
        budget = c.schedule_queries or max(_per_image_budget(oracle, c.max_steps), c.min_schedule)
        hi = lo = None
        if self.config.norm == "linf":  # every L∞ candidate is made of these vertices
            rows = np.arange(n)
            e = state.eps[:, None, None, None]
            hi = self.quantized(state, rows, state.x0 + e, state.eps)
            lo = self.quantized(state, rows, state.x0 - e, state.eps)
        return SquareState(
            rng=Streams(state.seeds),
            n_iters=np.full(n, budget, np.int64),
            halvings=np.zeros(n, np.int64),
            since=np.zeros(n, np.int64),
            last_rc=np.full((n, 2), -1, np.int64),
            hi=hi,
            lo=lo,
        )

    def loss_of(
        self, obs: ScoresObservation, state: AttackState, rows: IntArray
    ) -> NDArray[np.float64]:
        """Square's loss of ``obs`` (one row per row): what its steps lower."""
        return np.asarray(self._loss(obs, state, rows), np.float64)

    def _l2_start(
        self, state: AttackState, rows: IntArray, rng: Streams, ch: int, h: int, w: int
    ) -> FloatArray:
        """A grid of ±bumps, tiles of side h//5, centred; scaled to L2 norm ε."""
        s = max(h // 5, 1)
        off_h, off_w = (h - s * (h // s)) // 2, (w - s * (w // s)) // 2
        m = len(rows)
        d = np.zeros((m, ch, h, w))
        tiles = [(i, j) for i in range(h // s) for j in range(w // s)]
        sg = rng.signs(rows, len(tiles) * ch).reshape(m, len(tiles), ch)
        ones = np.ones(m, np.int64)
        for k, (i, j) in enumerate(tiles):  # ~25 tiles, each vectorised over images
            b = bumps(ones * (off_h + i * s), ones * (off_w + j * s), ones * s, ones < 0, h, w)
            d += b * sg[:, k, :, None, None]
        norm = np.sqrt((d.reshape(m, -1) ** 2).sum(axis=1)).reshape(-1, 1, 1, 1)
        d *= state.eps[rows].reshape(-1, 1, 1, 1) / np.maximum(norm, 1e-12)
        x = np.clip(state.x0[rows] + d, 0.0, 1.0).astype(np.float32)
        return self.quantized(state, rows, x, state.eps[rows])

    # -- step

    def step(self, oracle: Oracle, state: AttackState) -> None:
        rows = self.affordable_rows(oracle, state, 1)
        if not len(rows):
            return
        _, h, w = state.x.shape[1:]
        own = self.own(state, SquareState)
        rng = own.rng
        s = side(self._p(state, rows), h, w, least=1 if self.config.norm == "linf" else 3)
        if self.config.norm == "linf":
            cand = self._linf_candidates(state, rows, rng, s, h, w)
        else:
            cand = self._l2_candidates(state, rows, rng, s, h, w)
        obs, loss = self._observe(oracle, state, rows, cand, QueryKind.LINE_SEARCH)
        hit = self.goal_hit(state, obs, rows)
        # Keep what lowers the loss, and a candidate that reaches the goal whatever its loss.
        keep = (loss < state.loss[rows]) | hit
        k = rows[keep]
        own.since[rows] = np.where(keep, 0, own.since[rows] + 1)
        own.last_rc[rows[~keep]] = -1
        state.x[k] = cand[keep]
        state.xq[k] = cand[keep]
        state.loss[k] = loss[keep]
        self.record(obs, state, rows, keep)
        self.mark_success(oracle, state, rows, hit)

    def _p(self, state: AttackState, rows: IntArray) -> NDArray[np.float64]:
        """Each row's window fraction for this step."""
        own, p_init = self.own(state, SquareState), self.config.initial_p(state.targeted[rows])
        if self.config.schedule == "paper":
            return paper_p(p_init, state.steps[rows], own.n_iters[rows])
        stalled = rows[own.since[rows] >= self.config.stall_steps]
        own.halvings[stalled] = np.minimum(own.halvings[stalled] + 1, _MAX_HALVINGS)
        own.since[stalled] = 0
        return np.asarray(p_init / 2.0 ** own.halvings[rows].astype(np.float64))

    def _positions(
        self, state: AttackState, rows: IntArray, rng: Streams, s: IntArray, h: int, w: int
    ) -> IntArray:
        """Window corners: random, or (``reuse``) the last kept window's where it still fits.
        The draw is made either way, so the streams do not depend on the option."""
        rc = positions(rng, rows, s, h, w)
        if self.config.reuse:
            own = self.own(state, SquareState)
            last = own.last_rc[rows]
            fits = (last[:, 0] >= 0) & (last[:, 0] + s <= h) & (last[:, 1] + s <= w)
            rc = np.where(fits[:, None], last, rc)
            own.last_rc[rows] = rc
        return rc

    def _linf_candidates(
        self, state: AttackState, rows: IntArray, rng: Streams, s: IntArray, h: int, w: int
    ) -> FloatArray:
        rc = self._positions(state, rows, rng, s, h, w)
        up = self._signs(state, rows, rng, rc, s)  # (m, ch)
        # Only the window's pixels change: index them rather than rewrite whole images.
        b, _, i, j = np.nonzero(window_mask(rc[:, 0], rc[:, 1], s, h, w))
        img, up_px = rows[b], up[b]
        own = self.own(state, SquareState)
        if own.hi is None or own.lo is None:
            raise TypeError("L∞ candidates are made of the ball's vertices; this state has none")
        hi, lo = own.hi[img, :, i, j], own.lo[img, :, i, j]
        cand = state.x[rows]
        old = cand[b, :, i, j]
        new = np.where(up_px, hi, lo)
        # A proposal equal to the current window would waste its query: take the far vertex.
        moved = np.bincount(b, weights=(new != old).any(axis=1), minlength=len(rows))
        same = (moved == 0)[b]
        if same.any():
            new[same] = np.where(up_px[same], lo[same], hi[same])
        cand[b, :, i, j] = new
        return cand.astype(np.float32, copy=False)

    def _signs(
        self, state: AttackState, rows: IntArray, rng: Streams, rc: IntArray, s: IntArray
    ) -> NDArray[np.bool_]:
        """(m, ch): whether each window channel goes to the ball's upper vertex (random)."""
        return rng.signs(rows, state.x.shape[1]) > 0

    def _l2_candidates(
        self, state: AttackState, rows: IntArray, rng: Streams, s: IntArray, h: int, w: int
    ) -> FloatArray:
        """Alg. 3: a bump of random sign per channel plus the old direction fills window 1
        with the L2 mass of windows 1 and 2 (and any budget clipping left unused); window 2
        is emptied."""
        ch = state.x.shape[1]
        m = len(rows)
        x0 = state.x0[rows].astype(np.float64)
        delta = state.x[rows].astype(np.float64) - x0
        eps = state.eps[rows].astype(np.float64)
        rc1 = self._positions(state, rows, rng, s, h, w)
        rc2 = positions(rng, rows, s, h, w)
        flip = rng.uniform(rows, 1)[:, 0] < 0.5
        w1 = window_mask(rc1[:, 0], rc1[:, 1], s, h, w)
        w2 = window_mask(rc2[:, 0], rc2[:, 1], s, h, w) & ~w1
        n1 = np.sqrt(_sq(delta * w1))  # (m, ch)
        n12 = _sq(delta * (w1 | w2))
        slack = np.maximum(eps**2 - _sq(delta).sum(axis=1), 0.0) / ch
        mass = np.sqrt(n12 + slack[:, None])
        sg = rng.signs(rows, ch).reshape(m, ch, 1, 1).astype(np.float64)
        new = bumps(rc1[:, 0], rc1[:, 1], s, flip, h, w) * sg
        new = new + delta * w1 / np.maximum(n1, 1e-12)[:, :, None, None]
        nn = np.sqrt(_sq(new))
        new = new / np.maximum(nn, 1e-12)[:, :, None, None] * mass[:, :, None, None]
        d = np.where(w1, new, np.where(w2, 0.0, delta))
        x = np.clip(x0 + d, 0.0, 1.0).astype(np.float32)
        return self.quantized(state, rows, x, state.eps[rows])


def _sq(a: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per row and channel: the sum of squares over the pixels."""
    return np.asarray((a.reshape(a.shape[0], a.shape[1], -1) ** 2).sum(axis=2))


def _per_image_budget(oracle: Oracle, max_steps: int | None) -> int:
    if oracle.max_queries is not None:
        return oracle.max_queries
    return max_steps if max_steps is not None else 10_000
