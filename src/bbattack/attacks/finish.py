"""The one finish path, shared by our attacks and the baselines: quantise into the ball, verify
with one counted FINAL query, and build the per-image results.

Stop reasons say what happened: ``success``, ``already`` (the goal held without a perturbation:
the clean image is already of the target class, or the saved image is the clean one; not an
attack's success, so ``success`` is false), ``budget``, ``max_steps``, ``stalled`` (a step spent
nothing and stopped nothing), ``no_final_query`` (the budget left nothing to verify with),
``lost_in_quantisation`` (the attack had a success, the verified 8-bit image missed), or an
attack's own reason (``finished`` for a library that returned).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import TARGET_DOWN_REASONS as _DOWN
from ..errors import QueryRejected, TargetUnavailable
from ..oracle import Observation, Oracle, QueryKind
from ..results import AttackResult, ClassRef, ImageResult, StepRecord, TopKEntry
from .balls import Ball
from .goals import Goal
from .state import AttackState

__all__ = ["Ending", "finish", "finish_run", "step_records"]

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True)
class Ending:
    """Where each image stands when its attack stops (row i = image ``first_index + i``)."""

    ids: IntArray
    x0: FloatArray
    x: FloatArray  # the candidates to save; quantised onto the grid here
    radius: NDArray[np.floating]  # each image's current radius (PI/LO: still shrinking)
    target: IntArray  # -1: untargeted
    orig: IntArray
    claimed: NDArray[np.bool_]  # the attack saw the goal hold (on an 8-bit image)
    queries_at_success: IntArray  # -1 where it did not
    steps: IntArray
    stop_reason: NDArray[np.object_]
    wall_time_s: NDArray[np.float64]
    seeds: IntArray
    first_index: int = 0


def finish(
    oracle: Oracle, goal: Goal, ball: Ball, end: Ending, total_reserve: int = 0
) -> tuple[FloatArray, list[ImageResult]]:
    """Quantise, verify (rows served in order; ``total_reserve`` keeps queries back for
    images that finish later), and return the saved images and their results."""
    n = len(end.x)
    # Quantised within each image's current radius, so an image still outside the goal's ball
    # is saved as it is (and fails the ball test) rather than moved.
    xq = ball.quantize_inside(np.asarray(end.x, np.float32), end.x0, end.radius)
    # An image stopped by an unavailable target is not verified: the query could not be sent.
    down = np.isin(end.stop_reason.astype(str), list(_DOWN))
    can = oracle.affordable(end.ids, 1, total_reserve=total_reserve) & ~down
    rows = np.flatnonzero(can)
    obs, verified, hit, matched = _verify(oracle, goal, end, xq, rows)
    already = hit & _unattacked(ball, end, xq)
    ok = hit & ~already & ball.contains(xq, end.x0)
    linf = np.abs((xq - end.x0).reshape(n, -1).astype(np.float64)).max(axis=1)
    l2 = np.sqrt(((xq - end.x0).reshape(n, -1).astype(np.float64) ** 2).sum(axis=1))
    names = oracle.class_names
    # A full score vector is summarised by its top 5; a top-k or label list is shown whole.
    n_shown = 5 if oracle.view.kind == "scores" else 20
    q_all = oracle.queries(end.ids)
    pos = {int(r): j for j, r in enumerate(rows)}

    def ref(c: int) -> ClassRef | None:
        return None if c < 0 else ClassRef(id=c, name=names.name(c) if names else None)

    images: list[ImageResult] = []
    for i in range(n):  # building result records, not a hot path
        topk = (
            []
            if obs is None or i not in pos
            else [
                TopKEntry(id=c, name=names.name(c) if names else None, score=s)
                for c, s in obs.topk(pos[i], n_shown)
            ]
        )
        qs: int | None = None
        if ok[i]:
            qs = int(end.queries_at_success[i]) if end.claimed[i] else int(q_all[i])
        reason = _reason(str(end.stop_reason[i]), bool(verified[i]), bool(end.claimed[i]), ok[i])
        reason = "already" if already[i] else reason
        ex = int(end.ids[i])
        images.append(
            ImageResult(
                index=end.first_index + i,
                success=bool(ok[i]),
                queries=int(q_all[i]),
                queries_at_success=qs,
                queries_by_kind=oracle.queries_by_kind(ex),
                linf=float(linf[i]),
                l2=float(l2[i]),
                eps=ball.eps,
                norm=ball.norm,
                original=ref(int(end.orig[i])),
                target=ref(int(end.target[i])),
                final_topk=topk,
                steps=int(end.steps[i]),
                stop_reason=reason,
                wall_time_s=float(end.wall_time_s[i]),
                seed=int(end.seeds[i]),
                lost_queries=oracle.lost_queries(ex),
                matched=ref(int(matched[i])) if ok[i] and end.target[i] >= 0 else None,
            )
        )
    return xq, images


def _verify(
    oracle: Oracle, goal: Goal, end: Ending, xq: FloatArray, rows: IntArray
) -> tuple[Observation | None, BoolArray, BoolArray, IntArray]:
    """The counted final check of ``rows``: its observation (None: none was made), and per
    image whether it was verified, whether the goal holds, and the class the goal matched."""
    n = len(xq)
    verified = np.zeros(n, dtype=bool)
    hit = np.zeros(n, dtype=bool)
    matched = np.full(n, -1, dtype=np.int64)
    obs: Observation | None = None
    if not len(rows):
        return obs, verified, hit, matched
    try:
        obs = oracle.query(xq[rows], end.ids[rows], QueryKind.FINAL)
    except TargetUnavailable as e:
        end.stop_reason[rows] = e.stop_reason
        if isinstance(e, QueryRejected):
            # A defence refused the check: the repeat of an image the target already
            # answered, with the goal holding, when the attack claimed it (a remote target's
            # journal would answer the repeat from its records). That answer stands.
            seen = rows[end.claimed[rows]]
            verified[seen] = hit[seen] = True
    else:
        verified[rows] = True
        hit[rows] = goal.hit(obs, end.target[rows], end.orig[rows])
        matched[rows] = goal.match(obs, end.target[rows])
    return obs, verified, hit, matched


def _unattacked(ball: Ball, end: Ending, xq: FloatArray) -> NDArray[np.bool_]:
    """Rows where a goal that holds owes nothing to the attack: the clean image is of the
    target class, or the saved image is the clean image as saved (no pixel moved)."""
    n = len(xq)
    clean = ball.quantize_inside(np.asarray(end.x0, np.float32), end.x0, end.radius)
    same = (xq == clean).reshape(n, -1).all(axis=1)
    return np.asarray(same | ((end.target >= 0) & (end.target == end.orig)))


def _reason(reason: str, verified: bool, claimed: bool, ok: bool) -> str:
    if not verified:
        return reason if reason in _DOWN else "no_final_query"
    if ok:
        return "success"
    if claimed:
        return "lost_in_quantisation"
    return reason


def finish_run(
    attack: Any,
    oracle: Oracle,
    state: AttackState,
    trace: list[StepRecord],
    surrogates: Sequence[Any],
) -> AttackResult:
    """The end of a run of our attacks: finish every image and build the result."""
    elapsed = time.perf_counter() - state.ctx.t0
    wall = np.where(state.finished_at > 0, state.finished_at, elapsed)
    end = Ending(
        ids=state.ids,
        x0=state.x0,
        x=state.xq,  # checks ran on the 8-bit iterates: the saved image is what was checked
        radius=state.eps,
        target=state.target,
        orig=state.orig,
        claimed=state.success,
        queries_at_success=state.queries_at_success,
        steps=state.steps,
        stop_reason=state.stop_reason,
        wall_time_s=wall,
        seeds=state.seeds,
    )
    xq, images = finish(oracle, state.goal, state.ball, end)
    return AttackResult(
        attack=attack.name,
        threat=oracle.view.describe(),
        config=attack.config.model_dump(mode="json"),
        images=images,
        x_adv=xq,
        trace=trace,
        surrogates=[
            {"name": s.name, "family": s.family, "weights": s.weights_id} for s in surrogates
        ],
    )


def step_records(state: AttackState, rows: IntArray, q: IntArray) -> list[StepRecord]:
    return [
        StepRecord(
            image=int(i),
            step=int(state.steps[i]),
            queries=int(q[i]),
            loss=_opt_float(state.loss[i]),
            target_prob=_opt_float(state.target_prob[i]),
            target_rank=int(state.target_rank[i]) if state.target_rank[i] >= 0 else None,
            eps=float(state.eps[i]),
            lr=float(state.lr[i]),
        )
        for i in rows
    ]


def _opt_float(v: float | np.floating) -> float | None:
    f = float(v)
    return None if not np.isfinite(f) else f
