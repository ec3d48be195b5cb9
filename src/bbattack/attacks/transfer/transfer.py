"""Surrogate-guided attack: candidates crafted on free local models, one target query each,
with the ensemble calibrated to every answer; then a query attack continues from the best."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ...errors import UserInputError
from ...oracle import LabelsObservation, Observation, Oracle, QueryKind
from ...targets import Vocabulary
from .._losses import visible_margin
from .._plain import PlainState
from .._rand import Streams
from ..base import Attack, AttackState, FloatArray, IntArray
from ..registry import Paper, register
from ..score.square import SquareAttack
from . import _handoffs as handoffs
from ._bases import judge_weights, propose_weights, weight_state
from ._guided import SHRINK, START, GuidedShrink
from ._prior_square import PriorSquare
from ._transfer import (
    DRAWS,
    calibration,
    class_masks,
    craft,
    ensemble_logp,
    surrogate_classes,
    surrogate_gradient,
)
from ._transfer_config import TransferConfig
from ._transfer_state import TransferState
from .gfcs import GFCSAttack

__all__ = ["TRANSFER_PAPERS", "TransferAttack", "TransferConfig"]

TRANSFER_PAPERS = Paper(
    title="Boosting adversarial attacks with momentum (MI-FGSM); Improving transferability "
    "with input diversity; On success and simplicity (logit loss); Simple and efficient "
    "hard label black-box attacks with surrogate ensembles (BASES)",
    authors="Dong et al.; Xie et al.; Zhao et al.; Cai et al.",
    venue="CVPR 2018; CVPR 2019; NeurIPS 2021; NeurIPS 2022",
    arxiv="1710.06081",
)

Handoff = Literal["square", "square-topk", "gfcs", "rays", "guided", "none"]
_ROUNDS, _INNER = 0, 3  # per-image phases (START and SHRINK: the guided shrink's)


@register(
    "transfer",
    rank=90,
    paper=TRANSFER_PAPERS,
    views=("scores", "topk", "labels"),
    norms=("linf", "l2"),
    uses_surrogate=True,
    budget=10_000,
)
class TransferAttack(Attack[TransferConfig]):
    """Surrogate-guided rounds, then a hand-off.

    1. Rounds at ε: MI-FGSM with input diversity on the surrogate ensemble, warm-started from
       the last round (iterate and momentum), gives one candidate per round, quantised to 8
       bits inside the ball and checked with one query. After each answer the ensemble's
       log-probabilities are calibrated to what the target revealed (every class under
       scores, the revealed ones under top-k, the winning label under labels), so the next
       round pushes down the classes the target prefers, not those the surrogates prefer.
    2. When the rounds end (``rounds``, or ``patience`` rounds without visible progress), the
       best point goes on: under scores, Square (L∞, with a small first window) or GFCS
       (L2, :class:`~bbattack.attacks.transfer.gfcs.GFCSAttack`); untargeted under
       top-k scores, Square on the clean class's shown score
       (:class:`~bbattack.attacks.label.square_topk.TopKSquare`; or RayS:
       ``topk_handoff``); untargeted under labels, RayS from its own first ray; targeted
       under top-k or labels, a candidate at a larger radius (``start_radii``) that the
       target shows in the target class, then a surrogate-guided ε-shrink
       (:class:`~bbattack.attacks.transfer._guided.GuidedShrink`); where no radius works,
       the given start image or a bundled photo, from which PI-Square (top-k scores) or
       HopSkipJump (labels) goes on (``photo_start = "query"``; or the guided shrink).

    Papers: MI-FGSM (Dong et al., CVPR 2018, arXiv:1710.06081), input diversity (Xie et al.,
    CVPR 2019, arXiv:1803.06978), targeted transfer with many iterations (Zhao et al.,
    NeurIPS 2021, arXiv:2012.11207), one query per surrogate candidate (BASES, Cai et al.,
    NeurIPS 2022, arXiv:2208.13182), transfer starts for query attacks (Suya et al., USENIX
    Security 2020). The calibration and the guided shrink are ours.
    Threat model: any view (scores, top-k, labels); targeted and untargeted. Norms: L∞ and L2
    (under L2 only GFCS continues, under scores: the other hand-offs are L∞).
    Query cost: 1 clean query; 1 per candidate (``transfer``); then the hand-off's own cost,
    1 per step; 1 final check. The surrogates cost nothing and never see the target.
    """

    config_class = TransferConfig

    def init_queries(self, start_given: bool) -> int:
        return 2

    def check_view(self, oracle: Oracle) -> None:
        if self.config.prior > 0 and self._handoff_kind(oracle.view.kind) != "square":
            raise UserInputError(
                "prior applies to the QL hand-off under L∞ only (full scores, --norm linf): "
                "it would be ignored here"
            )

    # -- the pieces

    def _handoff(self, oracle: Oracle, state: AttackState) -> Handoff:
        kind = self._handoff_kind(oracle.view.kind)
        if kind != "labels":
            return kind
        if state.targeted.all():
            return "guided"
        topk = oracle.view.reveals_scores and self.config.topk_handoff == "square"
        return "square-topk" if topk else "rays"

    def _handoff_kind(self, view: str) -> Handoff | Literal["labels"]:
        """The hand-off a view and norm lead to; under labels it also depends on the goal."""
        if view == "scores":
            return "square" if self.config.norm == "linf" else "gfcs"
        return "labels" if self.config.norm == "linf" else "none"

    def _refresh_prior(self, inner: PriorSquare, state: AttackState) -> None:
        """The surrogates' gradient at each handed-off iterate that moved since its last one
        (free: no query)."""
        tr = self.own(state, TransferState)
        with self._inner(state):
            rows = inner.stale(state)
        if not len(rows):
            return
        bias = tr.bias[rows] if tr.bias is not None else None
        g = surrogate_gradient(
            self.surrogates(state),
            tr.weights.trying[rows],
            state.x[rows],
            tr.classes[rows],
            state.targeted[rows],
            bias,
            self.config.loss,
        )
        with self._inner(state):
            inner.set_prior(state, rows, g)

    def _scorer(self, state: AttackState) -> SquareAttack | GFCSAttack | None:
        """The score-based hand-off, whose loss the rounds track; None under other views."""
        name = self.own(state, TransferState).handoff
        if name in ("square", "square-topk"):
            return handoffs.square(self.config, topk=name == "square-topk")
        return handoffs.gfcs(self.config) if name == "gfcs" else None

    def _guided(self) -> GuidedShrink:
        return GuidedShrink(self)

    def repair(
        self, state: AttackState, rows: IntArray, level: IntArray, margin: NDArray[np.float64]
    ) -> None:
        """The guided shrink is stuck for ``rows``: PI-Square's repairs go on from there."""
        self.own(state, TransferState).phase[rows] = _INNER
        with self._inner(state):
            handoffs.pi_square(self.config).adopt(state, rows, level, margin)

    def from_photo(
        self, oracle: Oracle, state: AttackState, rows: IntArray, found: FloatArray
    ) -> None:
        """No candidate at the start radii showed the target class: the query attack goes on
        from the start image ``found`` (seen in the target class): PI-Square's radius search
        under top-k scores, HopSkipJump under labels. No queries here."""
        self.own(state, TransferState).phase[rows] = _INNER
        with self._inner(state):
            if oracle.view.reveals_scores:
                handoffs.pi_square(self.config).begin(state, rows, found)
            else:
                state.xq[rows] = found
                handoffs.hsj(self.config).adopt(state, rows)

    def stuck(self, state: AttackState, rows: IntArray) -> None:
        """Label-only, the guided shrink is stuck for ``rows``: stop, or HopSkipJump from the
        last image the target showed in the target class."""
        if self.config.stuck == "stop":
            self.stop(state, rows, "stalled")
            return
        self.own(state, TransferState).phase[rows] = _INNER
        with self._inner(state):
            handoffs.hsj(self.config).adopt(state, rows)

    @contextmanager
    def _inner(self, state: AttackState) -> Iterator[None]:
        """The hand-off attack sees its own state as the run's while it works on rows."""
        tr = self.own(state, TransferState)
        state.own = tr.inner
        try:
            yield
        finally:
            state.own = tr

    @staticmethod
    def surrogates(state: AttackState) -> tuple[Any, ...]:
        out: tuple[Any, ...] = state.ctx.surrogates
        return out

    def craft(
        self,
        state: AttackState,
        rows: IntArray,
        x: FloatArray,
        radius: NDArray[np.float32],
        iters: int,
    ) -> FloatArray:
        """``iters`` surrogate iterations from ``x`` inside ``radius``, momentum carried over;
        returns the 8-bit candidate (the float iterate goes to ``state.x``)."""
        tr = self.own(state, TransferState)
        sur = self.surrogates(state)
        draws = Streams(state.seeds, tr.counter).uniform(rows, iters * DRAWS)
        weights = tr.weights.trying[rows]
        bias = tr.bias[rows] if tr.bias is not None else None
        out, g = craft(
            sur,
            weights,
            state.x0[rows],
            x,
            tr.g[rows],
            tr.classes[rows],
            state.targeted[rows],
            radius,
            state.ball,
            self.config.how(iters),
            draws,
            bias,
            np.minimum(radius, self.config.eps),  # ε-sized steps in a larger ball too
        )
        tr.g[rows] = g
        state.x[rows] = out
        return self.quantized(state, rows, out, radius)

    def calibrate(
        self, state: AttackState, rows: IntArray, obs: Observation, x: FloatArray
    ) -> None:
        """Calibrate the ensemble to ``obs``, the target's answer at ``x``."""
        tr = self.own(state, TransferState)
        if tr.bias is None:
            return
        sur = self.surrogates(state)
        lp = ensemble_logp(sur, tr.weights.trying[rows], x)
        tr.bias[rows] = calibration(obs, lp, state.target[rows])

    def _progress(self, obs: Observation, state: AttackState, rows: IntArray) -> Any:
        """Higher is better: what the view shows of the goal (−inf: nothing)."""
        scorer = self._scorer(state)
        if scorer is not None:
            return -scorer.loss_of(obs, state, rows)  # type: ignore[arg-type]
        t = state.target[rows]
        if isinstance(obs, LabelsObservation):
            r = obs.rank_of(np.where(t >= 0, t, state.orig[rows]))
            return np.where(t >= 0, np.where(r >= 0, -r, -np.inf), np.where(r != 0, 0.0, -np.inf))
        m = visible_margin(obs, np.where(t >= 0, t, state.orig[rows]))
        return np.where(t >= 0, m, -m)

    # -- init

    def init(self, oracle: Oracle, state: AttackState, start: FloatArray | None) -> None:
        n = len(state.x)
        k = surrogate_classes(self.surrogates(state), state.x.shape[1:])
        targets = class_masks(oracle, state.target, k)  # before a query: a bad label is refused
        self.clean_query(oracle, state)
        # What the surrogates raise (the target) or lower (the clean label, untargeted).
        clean = class_masks(oracle, np.where(state.targeted, -1, state.orig), k)
        shared = not isinstance(oracle.class_names, Vocabulary) and oracle.num_classes == k
        handoff = self._handoff(oracle, state)
        guided = self._guided().prepare(state) if handoff == "guided" else None
        state.own = TransferState(
            handoff=handoff,
            classes=np.where(state.targeted[:, None], targets, clean),
            phase=np.full(n, _ROUNDS, np.int64),
            round=np.zeros(n, np.int64),
            since=np.zeros(n, np.int64),
            best=np.full(n, -np.inf),
            bestx=state.x0.copy(),
            g=np.zeros_like(state.x),
            counter=np.zeros(n, np.int64),
            bias=np.zeros((n, k), np.float32) if shared else None,
            weights=weight_state(n, len(self.surrogates(state))),
            start=start,
            guided=guided,
            inner=self._prepare_inner(oracle, state, handoff, targets, k),
        )
        if handoff == "rays":
            state.eps[:] = self.config.eps  # RayS's radius starts at its hand-off
        live = np.flatnonzero(state.active)
        if len(live):
            self._round(oracle, state, live, self.config.iters)

    def _prepare_inner(
        self,
        oracle: Oracle,
        state: AttackState,
        handoff: str,
        targets: NDArray[np.bool_],
        k: int,
    ) -> PlainState | None:
        """The hand-off attack's own state for every row, built before any row is handed."""
        c = self.config
        if handoff in ("square", "square-topk"):
            return handoffs.square(c, topk=handoff == "square-topk").prepare(oracle, state)
        if handoff == "gfcs":
            wanted = np.where(state.targeted[:, None], targets, False)
            return handoffs.gfcs(c).prepare(state, wanted, k)
        if handoff == "rays":
            return handoffs.rays(self.config).prepare(state)
        if handoff == "guided":
            if oracle.view.reveals_scores:
                return handoffs.pi_square(self.config).prepare(oracle, state)
            return handoffs.hsj(self.config).prepare(state)
        return None

    # -- step

    def step(self, oracle: Oracle, state: AttackState) -> None:
        rows = self.affordable_rows(oracle, state, 1)
        if not len(rows):
            return
        phase = self.own(state, TransferState).phase[rows]
        inner = rows[phase == _INNER]  # before this step's hand-offs: one query per step
        mine = rows[phase == _ROUNDS]
        if len(mine):
            self._round(oracle, state, mine, self.config.round_iters)
        guided = self._guided()
        for ph, fn in ((START, guided.start_step), (SHRINK, guided.shrink_step)):
            sel = rows[phase == ph]
            if len(sel):
                fn(oracle, state, sel)
        if len(inner):
            self._inner_step(oracle, state, inner)

    def _round(self, oracle: Oracle, state: AttackState, rows: IntArray, iters: int) -> None:
        tr = self.own(state, TransferState)
        eps = np.full(len(rows), self.config.eps, np.float32)
        propose_weights(tr.weights, rows, self.config.weight_step)
        cand = self.craft(state, rows, state.x[rows], eps, iters)
        obs = oracle.query(cand, state.ids[rows], QueryKind.TRANSFER)
        tr.round[rows] += 1
        self.record(obs, state, rows)
        self.mark_success(oracle, state, rows, self.goal_hit(state, obs, rows))
        self.calibrate(state, rows, obs, cand)
        prog = np.asarray(self._progress(obs, state, rows), np.float64)
        better = prog > tr.best[rows]
        b = rows[better]
        tr.best[b] = prog[better]
        tr.bestx[b] = state.xq[b] = cand[better]
        tr.since[b] = 0
        tr.since[rows[~better]] += 1
        judge_weights(tr.weights, rows, better)
        if self._scorer(state) is not None:
            state.loss[b] = -prog[better]
        over = (tr.round[rows] >= self.config.rounds) | (tr.since[rows] >= self.config.patience)
        done = rows[over & state.active[rows]]
        if len(done):
            self._hand_off(oracle, state, done)

    def _hand_off(self, oracle: Oracle, state: AttackState, rows: IntArray) -> None:
        """The rounds are over for ``rows``: the best point goes on with the hand-off."""
        tr = self.own(state, TransferState)
        name = tr.handoff
        best = tr.bestx[rows]
        if name == "none":
            self.stop(state, rows, "stalled")
            return
        if name == "guided":
            self._guided().begin(state, rows)
            return
        tr.phase[rows] = _INNER
        state.x[rows] = state.xq[rows] = best
        if name == "rays":
            # RayS from the paper's ray (all +1), not the best candidate's high-frequency signs:
            # from those it reached ε on none of 4 cross-family PI cases (transfer-x-lite0).
            state.xq[rows] = state.x0[rows]
            with self._inner(state):
                handoffs.rays(self.config).adopt(state, rows)

    def _inner_step(self, oracle: Oracle, state: AttackState, rows: IntArray) -> None:
        """One step of the hand-off attack for ``rows`` alone: the others are hidden from it."""
        name = self.own(state, TransferState).handoff
        inner: Attack[Any] = self._scorer(state) or (
            handoffs.rays(self.config)
            if name == "rays"
            else handoffs.pi_square(self.config)
            if oracle.view.reveals_scores
            else handoffs.hsj(self.config)
        )
        hide = np.setdiff1d(np.flatnonzero(state.active), rows)
        state.active[hide] = False
        try:
            if isinstance(inner, PriorSquare):
                self._refresh_prior(inner, state)
            with self._inner(state):
                inner.step(oracle, state)
        finally:
            state.active[hide] = True
