"""Start images for attacks that begin inside the target class (PI, LO): the user's, checked
through the oracle, or one found among the bundled photos, each candidate a counted query."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import StartImageError
from ..images import start_candidates
from ..oracle import Oracle, QueryKind
from .base import Attack, AttackState, FloatArray, IntArray
from .goals import Goal

__all__ = ["check_start", "decision_starts", "find_start_images", "noise_starts"]


def check_start(
    attack: Attack[Any],
    oracle: Oracle,
    state: AttackState,
    rows: IntArray,
    start: FloatArray,
    *,
    below: bool = False,
) -> FloatArray:
    """Check (one INIT query per row) that the oracle puts each start image in the target's
    top-k; what the answer revealed is recorded for the trace. ``below``: a label below the
    target will do where ancestors count (attacks that decide by the goal alone; the others
    need the target's own rank)."""
    if not attack.can_pay(oracle, state, rows, 1).all():
        raise StartImageError(
            "the budget cannot pay the start image's check and keep the final verification"
        )
    obs = oracle.query(np.clip(start, *oracle.bounds), state.ids[rows], QueryKind.INIT)
    shown = Goal("topk", state.goal.ancestry if below else None)
    bad = shown.match(obs, state.target[rows]) < 0
    if bad.any():
        k = oracle.view.k or oracle.num_classes
        raise StartImageError(
            f"the start image is not in the model's top-{k} for the target class "
            f"(image {int(rows[bad][0])}); give a start image the model labels as the target"
        )
    attack.record(obs, state, rows)
    return start


def find_start_images(
    attack: Attack[Any], oracle: Oracle, state: AttackState, rows: IntArray
) -> FloatArray:
    """Find, among the bundled photos, a start image the oracle puts in the target's top-k.

    Each candidate is a counted INIT query charged to the image that needs it.
    """
    cands = start_candidates(oracle.input_shape)
    need = len(rows) * len(cands)
    ok = attack.can_pay(oracle, state, rows, len(cands))
    if not ok.all():
        raise StartImageError(
            f"searching {len(cands)} bundled photos for a start image needs "
            f"{need} queries; raise the budget or give --start-image"
        )
    pts = np.tile(cands, (len(rows), 1, 1, 1))
    obs = oracle.query(pts, np.repeat(state.ids[rows], len(cands)), QueryKind.INIT)
    rank = obs.rank_of(np.repeat(state.target[rows], len(cands))).reshape(len(rows), -1)
    found = (rank >= 0).any(axis=1)
    if not found.all():
        cls = int(state.target[rows][~found][0])
        cname = oracle.class_names.name(cls) if oracle.class_names else str(cls)
        raise StartImageError(
            f"no bundled photo is in the model's top-{oracle.view.k or oracle.num_classes} for "
            f"target {cls} ({cname}); give a start image of that class (--start-image)"
        )
    # Best rank wins; ties go to the first photo.
    best = np.where(rank >= 0, rank, np.iinfo(np.int64).max).argmin(axis=1)
    out: FloatArray = cands[best]
    return out


def noise_starts(
    attack: Attack[Any], oracle: Oracle, state: AttackState, rows: IntArray, tries: int
) -> FloatArray:
    """Untargeted decision-based starts: uniform-noise images, one INIT query each, until one
    is adversarial (at most ``tries`` per image, each drawn from the image's own stream).
    NaN marks a row that found none or could not pay."""
    import torch

    out = np.full((len(rows), *state.x.shape[1:]), np.nan, np.float32)
    left = np.arange(len(rows))
    for _ in range(tries):
        pay = attack.can_pay(oracle, state, rows[left], 2)
        left = left[pay]
        if not len(left):
            break
        cand = np.empty((len(left), *state.x.shape[1:]), np.float32)
        for j, i in enumerate(left):  # one draw per image from its own stream
            torch.from_numpy(cand[j]).uniform_(generator=state.rngs[int(rows[i])])
        obs = oracle.query(cand, state.ids[rows[left]], QueryKind.INIT)
        hit = attack.goal_hit(state, obs, rows[left])
        out[left[hit]] = cand[hit]
        left = left[~hit]
    return out


def decision_starts(
    attack: Attack[Any], oracle: Oracle, state: AttackState, start: FloatArray | None, tries: int
) -> tuple[IntArray, FloatArray]:
    """Adversarial start points for the active images of a decision-based attack: targeted,
    the given start images (checked) or a bundled photo; untargeted, uniform noise. Images
    without one stop as ``no_start_image``. Returns the rows that have one, and their points."""
    need = np.flatnonzero(state.active)
    if not len(need):
        return need, state.x[need]
    try:
        if state.targeted.all():
            found = (
                find_start_images(attack, oracle, state, need)
                if start is None
                else check_start(attack, oracle, state, need, start[need], below=True)
            )
        else:
            found = noise_starts(attack, oracle, state, need, tries)
    except StartImageError:
        attack.stop(state, need, "no_start_image")
        return need[:0], state.x[need[:0]]
    ok = np.isfinite(found.reshape(len(need), -1)[:, 0])
    attack.stop(state, need[~ok], "no_start_image")
    return need[ok], found[ok]
