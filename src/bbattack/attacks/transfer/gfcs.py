"""GFCS (Lord, Mueller, Bertinetto, ICLR 2022): SimBA-style steps along the normalised
gradients of surrogate models, with output-diversified directions when those stall; written
from the paper."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from ..._threads import one_torch_thread
from ...oracle import Oracle, QueryKind, ScoresObservation
from ...surrogates import Surrogate
from .._losses import Loss, goal_loss
from .._plain import PlainState
from .._rand import Streams
from ..balls import Norm
from ..base import Attack, AttackConfig, AttackState, FloatArray, IntArray
from ..registry import Paper, register
from ._transfer import class_masks, surrogate_classes

__all__ = ["GFCS_2022", "GFCSAttack", "GFCSConfig", "surrogate_directions"]

GFCS_2022 = Paper(
    title="Attacking deep networks with surrogate-based adversarial black-box methods is easy",
    authors="Lord, Mueller, Bertinetto",
    venue="ICLR 2022",
    arxiv="2203.08725",
)

_PLUS, _MINUS = 0, 1  # which side of the direction the next query tries


class GFCSConfig(AttackConfig):
    """GFCS hyperparameters; the step is a fraction of the L2 radius (the paper's 2.0 at
    ε₂ = √(0.001·d) on ImageNet is about 0.16 of it)."""

    norm: Norm = Field("l2", description="the ball: l2 (GFCS is an L2 attack)")
    step: float = Field(0.2, gt=0.0, le=1.0, description="step length, a fraction of ε (L2)")
    loss: Loss = Field("margin", description="the target's loss on log-probabilities")


@dataclass
class GFCSState(PlainState):
    """GFCS's own state, one row per image."""

    direction: FloatArray  # the direction being tried
    side: IntArray  # _PLUS: try +direction next; _MINUS: −direction
    tried: NDArray[np.bool_]  # (N, S): surrogates that failed at the current image
    counter: IntArray  # the draws' stream counters
    last: IntArray  # the surrogate of the direction (-1: ODS)
    targets: NDArray[np.bool_]  # (N, K): the classes to raise
    k: int  # the surrogates' class count


@register(
    "gfcs",
    rank=100,
    paper=GFCS_2022,
    views=("scores",),
    norms=("l2",),
    uses_surrogate=True,
    budget=10_000,
)
class GFCSAttack(Attack[GFCSConfig]):
    """GFCS: at the current image, the normalised gradient of a surrogate's margin loss is a
    direction q; the step x ± step·q (projected into the L2 ball, on the 8-bit grid) is
    queried, + first, and kept when the target's loss falls. The surrogates are tried in a
    random order at each image; when every one has failed there, an output-diversified
    direction (ODS: the gradient of w·logits for random w, on a random surrogate) is tried
    instead, until one step is kept.

    Paper: Lord, Mueller, Bertinetto, "Attacking deep networks with surrogate-based
    adversarial black-box methods is easy", ICLR 2022 (arXiv:2203.08725); SimBA (Guo et al.,
    ICML 2019); ODS (Tashiro et al., NeurIPS 2020).
    Threat model: full scores; targeted and untargeted. Norm: L2.
    Query cost per step: 1 (one side of one direction; the answer is the success check).
    Also: 1 clean query, 1 final check. The surrogates cost nothing.
    """

    config_class = GFCSConfig

    def init(self, oracle: Oracle, state: AttackState, start: FloatArray | None) -> None:
        rows = np.arange(len(state.x))
        k = surrogate_classes(state.ctx.surrogates, state.x.shape[1:])
        classes = class_masks(oracle, state.target, k)  # before a query: a bad label is refused
        obs = self.clean_query(oracle, state)
        state.own = self.prepare(state, np.where(state.targeted[:, None], classes, False), k)
        state.loss[:] = self.loss_of(self.scores(obs), state, rows)

    def prepare(self, state: AttackState, targets: NDArray[np.bool_], k: int) -> GFCSState:
        """GFCS's own state for every row (no queries); ``targets`` (N, K): the classes to
        raise."""
        n, s = len(state.x), len(state.ctx.surrogates)
        return GFCSState(
            direction=np.zeros_like(state.x),
            side=np.full(n, _PLUS, np.int64),
            tried=np.zeros((n, s), bool),
            counter=np.zeros(n, np.int64),
            last=np.full(n, -1, np.int64),
            targets=targets,
            k=k,
        )

    def loss_of(
        self, obs: ScoresObservation, state: AttackState, rows: IntArray
    ) -> NDArray[np.float64]:
        return goal_loss(obs, state.target[rows], state.orig[rows], self.config.loss, "margin")

    def step(self, oracle: Oracle, state: AttackState) -> None:
        rows = self.affordable_rows(oracle, state, 1)
        if not len(rows):
            return
        own = self.own(state, GFCSState)
        fresh = rows[own.side[rows] == _PLUS]
        if len(fresh):
            own.direction[fresh] = self._directions(state, fresh)
        sign = np.where(own.side[rows] == _PLUS, 1.0, -1.0).astype(np.float32)
        step = (self.config.step * state.eps[rows]).astype(np.float32)
        cand = state.x[rows] + (sign * step)[:, None, None, None] * own.direction[rows]
        cand = state.ball.project(cand, state.x0[rows], state.eps[rows])
        cand = self.quantized(state, rows, cand, state.eps[rows])
        obs = self.query_scores(oracle, cand, state.ids[rows], QueryKind.LINE_SEARCH)
        loss = self.loss_of(obs, state, rows)
        better = loss < state.loss[rows]
        b = rows[better]
        state.x[b] = state.xq[b] = cand[better]
        state.loss[b] = loss[better]
        own.tried[b] = False
        self.record(obs, state, rows)
        # A failed + tries −; a failed − gives the direction up (its surrogate is spent here).
        plus = own.side[rows] == _PLUS
        own.side[rows] = np.where(~better & plus, _MINUS, _PLUS)
        spent = rows[~better & ~plus]
        last = own.last[spent]
        ok = last >= 0
        own.tried[spent[ok], last[ok]] = True
        self.mark_success(oracle, state, rows, self.goal_hit(state, obs, rows))

    def _directions(self, state: AttackState, rows: IntArray) -> FloatArray:
        """Per row: the gradient of an untried surrogate (in a random order), else ODS."""
        own = self.own(state, GFCSState)
        sur: Sequence[Surrogate] = state.ctx.surrogates
        rng = Streams(state.seeds, own.counter)
        u = rng.uniform(rows, len(sur) + 1)
        order = np.argsort(np.where(own.tried[rows], 2.0, u[:, : len(sur)]), axis=1)
        pick = order[:, 0]
        ods = np.asarray(own.tried[rows].all(axis=1), dtype=bool)
        pick = np.where(ods, np.minimum((u[:, -1] * len(sur)).astype(np.int64), len(sur) - 1), pick)
        own.last[rows] = np.where(ods, -1, pick)
        w = rng.uniform(rows, own.k) * 2.0 - 1.0
        return surrogate_directions(
            sur, state.x[rows], pick, ods, w, own.targets[rows], state.target[rows],
            state.orig[rows],
        )  # fmt: skip


@one_torch_thread
def surrogate_directions(
    surrogates: Sequence[Surrogate],
    x: FloatArray,
    pick: IntArray,
    ods: NDArray[np.bool_],
    w: NDArray[np.float64],
    targets: NDArray[np.bool_],
    target: IntArray,
    orig: IntArray,
) -> FloatArray:
    """Unit-L2 directions, one per row, from surrogate ``pick[i]``: the gradient of its margin
    loss (raise the target's classes over the rest; untargeted: lower the clean class), or
    where ``ods``, of ``w[i]``·logits (output diversification, Tashiro et al. 2020). One
    gradient pass per surrogate, over the rows that picked it."""
    import torch

    out = np.zeros_like(x)
    for s_i, s in enumerate(surrogates):
        sel = np.flatnonzero(pick == s_i)
        if not len(sel):
            continue
        xt = torch.from_numpy(np.ascontiguousarray(x[sel])).requires_grad_(True)
        z = s.logits(xt)
        m = torch.from_numpy(targets[sel])
        tgt = torch.from_numpy(target[sel] >= 0)
        own = torch.where(
            tgt,
            torch.logsumexp(z.masked_fill(~m, float("-inf")), dim=1),
            -z[torch.arange(len(sel)), torch.from_numpy(np.maximum(orig[sel], 0))],
        )
        other = torch.where(
            tgt,
            z.masked_fill(m, float("-inf")).max(dim=1).values,
            -_others(z, orig[sel]),
        )
        margin = own - other
        wz = (torch.from_numpy(w[sel].astype(np.float32)) * z).sum(dim=1)
        obj = torch.where(torch.from_numpy(ods[sel]), wz, margin)
        (g,) = torch.autograd.grad(obj.sum(), xt)
        gn = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        out[sel] = (g / gn).numpy()
    return out


def _others(z: Any, orig: IntArray) -> Any:
    import torch

    mask = torch.zeros_like(z, dtype=torch.bool)
    mask[torch.arange(len(z)), torch.from_numpy(np.maximum(orig, 0))] = True
    return z.masked_fill(mask, float("-inf")).max(dim=1).values
