"""Start images for attacks that begin inside the target class (PI, LO): the user's, checked
through the oracle, or one found among the bundled photos, each candidate a counted query."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import StartImageError
from ..images import start_candidates
from ..oracle import Observation, Oracle, QueryKind
from .base import Attack, AttackState, FloatArray, IntArray

__all__ = ["check_start", "find_start_images"]

Record = Callable[[Observation, AttackState, IntArray], None]


def check_start(
    attack: Attack[Any],
    oracle: Oracle,
    state: AttackState,
    rows: IntArray,
    start: FloatArray,
    record: Record,
) -> FloatArray:
    """Check (one INIT query per row) that the oracle puts each start image in the target's
    top-k; ``record`` stores what the answer revealed."""
    if not attack.can_pay(oracle, state, rows, 1).all():
        raise StartImageError(
            "the budget cannot pay the start image's check and keep the final verification"
        )
    obs = oracle.query(np.clip(start, *oracle.bounds), state.ids[rows], QueryKind.INIT)
    bad = obs.rank_of(state.target[rows]) < 0
    if bad.any():
        k = oracle.view.k or oracle.num_classes
        raise StartImageError(
            f"the start image is not in the model's top-{k} for the target class "
            f"(image {int(rows[bad][0])}); give a start image the model labels as the target"
        )
    record(obs, state, rows)
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
