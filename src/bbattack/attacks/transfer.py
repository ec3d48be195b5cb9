"""Surrogate-guided attack: a transfer start crafted on free local models, then a query attack
that continues from it (Square under scores, PI-Square under top-k, RayS untargeted)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..errors import StartImageError, UserInputError
from ..oracle import LabelsObservation, Observation, Oracle, QueryKind, ScoresObservation
from ._start import check_start, find_start_images
from ._transfer import Craft, TransferLoss, class_masks, craft
from .base import Attack, AttackConfig, AttackState, FloatArray, IntArray
from .pi_square import PISquareAttack
from .rays import RaySAttack
from .registry import Paper, register
from .square import SquareAttack

__all__ = ["TRANSFER_PAPERS", "TransferAttack", "TransferConfig"]

TRANSFER_PAPERS = Paper(
    title="Boosting adversarial attacks with momentum (MI-FGSM); Improving transferability "
    "with input diversity; On success and simplicity (logit loss); Hybrid batch attacks",
    authors="Dong et al.; Xie et al.; Zhao et al.; Suya et al.",
    venue="CVPR 2018; CVPR 2019; NeurIPS 2021; USENIX Security 2020",
    arxiv="1710.06081",
)

Handoff = Literal["square", "pi-square", "rays", "none"]


class TransferConfig(AttackConfig):
    """Defaults measured on EfficientNet-Lite0 with Lite1 + Lite2 as surrogates (16 photos,
    targeted L∞ 0.05): 40 logit-loss iterations at ε/8 transfer on 6/16 photos where 20 CE
    iterations transfer on 1/16 (BENCHMARKS.md, transfer.toml)."""

    iters: int = Field(40, ge=1, le=10_000, description="MI-FGSM iterations on the surrogates")
    step: float = Field(0.125, gt=0.0, le=1.0, description="step size, a fraction of ε")
    momentum: float = Field(1.0, ge=0.0, le=10.0, description="MI-FGSM momentum")
    diversity: float = Field(
        0.7, ge=0.0, le=1.0, description="probability of a random resize-and-pad per iteration"
    )
    loss: TransferLoss = Field("logit", description="surrogate loss: logit (target logit) or ce")
    start_radii: tuple[float, ...] = Field(
        (0.1, 0.2, 0.35),
        description="PI/LO targeted: larger L∞ radii tried in turn for a start image that the "
        "target labels as the target class (one query each)",
    )
    retries: int = Field(
        8,
        ge=0,
        description="LO targeted: further candidates (new input-diversity draws), each 1 query",
    )
    p_init: float = Field(
        0.01, gt=0.0, le=1.0, description="Square's initial window after the hand-off (QL)"
    )

    def how(self, seed: int = 0, iters: int | None = None) -> Craft:
        return Craft(
            iters=iters or self.iters,
            step=self.step,
            momentum=self.momentum,
            diversity=self.diversity,
            loss=self.loss,
            seed=seed,
        )


@register(
    "transfer",
    paper=TRANSFER_PAPERS,
    views=("scores", "topk", "labels"),
    norms=("linf", "l2"),
    uses_surrogate=True,
    budget=10_000,
)
class TransferAttack(Attack[TransferConfig]):
    """Transfer start plus hand-off: craft the adversarial image on the surrogates (MI-FGSM
    with input diversity on the mean logit loss of the ensemble, projected into the ball and
    quantised to 8 bits), ask the target once, and continue from it with a query attack.

    Papers: MI-FGSM (Dong et al., CVPR 2018, arXiv:1710.06081), input diversity (Xie et al.,
    CVPR 2019, arXiv:1803.06978), the logit loss for targeted transfer (Zhao et al., NeurIPS
    2021, arXiv:2012.11207), transfer starts for query attacks (Suya et al., USENIX Security
    2020, arXiv:1908.07000). The hand-offs are ours: Square (Andriushchenko et al.) from the
    transfer image under scores; under top-k, targeted, PI-Square from the transfer image at
    ε or, failing that, at the first larger radius where the target shows it as the target
    class (then the bundled photos); untargeted under top-k or labels, RayS from the transfer
    image's signs. Labels, targeted: ``retries`` further transfer candidates, nothing more.
    Threat model: any view (scores, top-k, labels); targeted and untargeted. Norms: L∞ and L2
    (the hand-offs are L∞ only; L2 runs end after the transfer candidates).
    Query cost: 1 clean query, 1 per transfer candidate (``transfer``), then the hand-off's
    own cost per step (1). The surrogates cost nothing and never see the target.
    """

    config_class = TransferConfig

    def init_queries(self, start_given: bool) -> int:
        return 2

    def _surrogates(self, state: AttackState) -> tuple[Any, ...]:
        out: tuple[Any, ...] = state.extra["surrogates"]
        return out

    def _num_classes(self, state: AttackState) -> int:
        """The surrogates' class count: one shared class space."""
        import torch

        ks = set()
        for s in self._surrogates(state):
            with torch.no_grad():
                ks.add(int(s.logits(torch.zeros((1, *state.x.shape[1:]))).shape[1]))
        if len(ks) != 1:
            raise UserInputError(f"the surrogates disagree on the number of classes: {sorted(ks)}")
        return ks.pop()

    def _craft(
        self,
        state: AttackState,
        rows: IntArray,
        x: FloatArray,
        radius: np.ndarray[Any, np.dtype[np.float32]],
        seed: int = 0,
        iters: int | None = None,
    ) -> FloatArray:
        sur = self._surrogates(state)
        weights = np.ones((len(rows), len(sur))) / len(sur)
        out = craft(
            sur,
            weights,
            state.x0[rows],
            x,
            state.extra["classes"][rows],
            state.targeted[rows],
            radius,
            state.ball,
            self.config.how(seed, iters),
        )
        return self.quantized(state, rows, out, radius)

    def _handoff(self, oracle: Oracle, state: AttackState) -> Handoff:
        kind = oracle.view.kind
        if self.config.norm != "linf":
            return "square" if kind == "scores" else "none"
        if kind == "scores":
            return "square"
        if not state.targeted.all():
            return "rays"
        return "pi-square" if kind == "topk" else "none"

    def _inner(self, state: AttackState) -> Any:
        name = state.extra["handoff"]
        eps, norm = self.config.eps, self.config.norm
        if name == "square":
            return SquareAttack(
                eps=eps, norm=norm, p_init=self.config.p_init, p_init_untargeted=0.05
            )
        if name == "pi-square":
            return PISquareAttack(eps=eps, norm=norm)
        return RaySAttack(eps=eps, norm=norm)

    # -- init: the clean image, the transfer candidate, the hand-off's start

    def init(self, oracle: Oracle, state: AttackState, start: FloatArray | None) -> None:
        n = len(state.x)
        rows = np.arange(n)
        t0 = state.extra["t0"]
        targets = class_masks(oracle, state.target, self._num_classes(state))  # before a query
        obs = oracle.query(state.x0, state.ids, QueryKind.INIT)
        state.orig[:] = obs.top1()
        self.mark_success(oracle, state, rows, self.goal_hit(state, obs, rows), t0)
        # What the surrogates raise (the target) or lower (the clean label, untargeted).
        clean = class_masks(oracle, np.where(state.targeted, -1, state.orig), targets.shape[1])
        state.extra["classes"] = np.where(state.targeted[:, None], targets, clean)
        handoff = self._handoff(oracle, state)
        state.extra.update(handoff=handoff, retries=np.full(n, self.config.retries, np.int64))
        inner = self._inner(state)
        if handoff in ("square", "pi-square"):
            inner.prepare(oracle, state)
        live = np.flatnonzero(state.active)
        if not len(live):
            return
        cand = self._craft(state, live, state.x0[live], state.eps[live])
        obs = oracle.query(cand, state.ids[live], QueryKind.TRANSFER)
        hit = self.goal_hit(state, obs, live)
        state.x[live] = state.xq[live] = cand
        if handoff == "square":
            assert isinstance(obs, ScoresObservation)
            state.loss[live] = inner.loss_of(obs, state, live)
            self.track_scores(state, live, obs)
        elif handoff == "rays":
            d = np.where(cand >= state.x0[live], 1, -1).reshape(len(live), -1)
            inner.prepare(state, d.astype(np.int8))
        _note(obs, state, live)
        self.mark_success(oracle, state, live, hit, t0)
        if handoff == "pi-square":
            self._pi_start(oracle, state, inner, live, obs, cand, start)

    def _pi_start(
        self,
        oracle: Oracle,
        state: AttackState,
        inner: PISquareAttack,
        rows: IntArray,
        obs: Observation,
        cand: FloatArray,
        start: FloatArray | None,
    ) -> None:
        """PI-Square's start: the transfer image where the target shows in the top-k at ε,
        else the first of the larger radii where it does, else the given start image (else a
        bundled photo), checked through the oracle."""
        need = rows[state.active[rows]]
        seen = obs.rank_of(state.target[rows]) >= 0
        ok = rows[seen & state.active[rows]]
        if len(ok):
            inner.begin(state, ok, cand[seen & state.active[rows]])
        left = np.setdiff1d(need, ok)
        x = cand[np.searchsorted(rows, left)]
        for i, r in enumerate(self.config.start_radii):
            if not len(left) or r <= self.config.eps:
                continue
            pay = self.can_pay(oracle, state, left, 2)  # the probe, and one step after it
            left = left[pay]
            x = x[pay]
            radius = np.full(len(left), r, np.float32)
            x = self._craft(
                state, left, x, radius, seed=i + 1, iters=max(self.config.iters // 2, 1)
            )
            o = oracle.query(x, state.ids[left], QueryKind.TRANSFER)
            shown = o.rank_of(state.target[left]) >= 0
            if shown.any():
                inner.begin(state, left[shown], x[shown])
            left, x = left[~shown], x[~shown]
        if len(left):
            try:
                found = (
                    find_start_images(self, oracle, state, left)
                    if start is None
                    else check_start(self, oracle, state, left, start[left], _note)
                )
                inner.begin(state, left, found)
            except StartImageError:  # no start: these images end; the others go on
                self.stop(state, left, "no_start_image", state.extra["t0"])

    # -- step

    def step(self, oracle: Oracle, state: AttackState) -> None:
        if state.extra["handoff"] != "none":
            self._inner(state).step(oracle, state)
            return
        rows = self.affordable_rows(oracle, state, 1)
        rows = rows[state.extra["retries"][rows] > 0]
        if not len(rows):
            return  # nothing left to try: the run loop stops these images as stalled
        k = int(self.config.retries - state.extra["retries"][rows].max()) + 1
        cand = self._craft(state, rows, state.x[rows], state.eps[rows], seed=100 + k)
        obs = oracle.query(cand, state.ids[rows], QueryKind.TRANSFER)
        state.extra["retries"][rows] -= 1
        state.x[rows] = state.xq[rows] = cand
        _note(obs, state, rows)
        self.mark_success(oracle, state, rows, self.goal_hit(state, obs, rows), state.extra["t0"])


def _note(obs: Observation, state: AttackState, rows: IntArray) -> None:
    """The target's rank (and score, where revealed) in ``obs``, for the trace; targeted rows
    only."""
    t = state.targeted[rows]
    tg = np.maximum(state.target[rows], 0)
    state.target_rank[rows[t]] = obs.rank_of(tg)[t]
    if not isinstance(obs, LabelsObservation):
        state.target_prob[rows[t]] = obs.score_of(tg)[t]
