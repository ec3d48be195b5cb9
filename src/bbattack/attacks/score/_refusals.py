"""Asking a defended target one image at a time: what the adaptive attacks share.

A defence refuses a whole call when it flags any image in it, so each image goes on its own:
a refusal of one never takes down another's answer. A silent defence answers a flagged query
with the key's last unflagged answer, which is the last answer some image of the run was
given (in a batch, often another image's); a score vector bit-identical to one of those, for
a different query, does not happen by chance, so it counts as a refusal too (``stale``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from ...errors import KeyBanned, QueryRejected
from ...oracle import Oracle, QueryKind, ScoresObservation, frozen_array
from ..base import Attack, BoolArray, FloatArray, IntArray

__all__ = ["Refusals", "ask_each", "ladder_search"]


class Refusals(Protocol):
    """What an adaptive attack's state keeps per image: the last answer (for stale answers),
    whether there is one, and the refusals met so far (refused or stale)."""

    prev: FloatArray  # (N, K)
    answered: BoolArray
    rejected: IntArray


def ask_each(
    oracle: Oracle,
    ids: IntArray,
    rows: IntArray,
    x: FloatArray,
    kinds: Sequence[QueryKind],
    seen: Refusals,
    *,
    eot: int = 1,
    stale: bool = True,
) -> tuple[BoolArray, ScoresObservation]:
    """``x[j]`` for image ``rows[j]``, each on its own and ``eot`` times (answers averaged;
    every one counted): whether it was answered (not refused, not stale), and the answers
    (zeros where not). KeyBanned is raised: the key is dead."""
    ok = np.ones(len(rows), bool)
    probs = np.zeros((len(rows), oracle.num_classes), np.float64)
    for j, (r, kind) in enumerate(zip(rows, kinds, strict=True)):
        for e in range(eot):
            try:
                p = Attack.query_scores(oracle, x[j : j + 1], ids[r : r + 1], kind).probs[0]
            except KeyBanned:
                raise
            except QueryRejected:
                ok[j] = False
                break
            if stale and e == 0 and _repeats(p, seen):
                ok[j] = False  # a silent defence's stale answer; the rest of EOT is moot
            seen.prev[r], seen.answered[r] = p, True
            if not ok[j]:
                break
            probs[j] += p
    probs[~ok] = 0.0
    np.add.at(seen.rejected, rows[~ok], 1)  # a row may repeat (an image's NES samples)
    return ok, ScoresObservation(frozen_array((probs / eot).astype(np.float32)))


def _repeats(p: FloatArray, seen: Refusals) -> bool:
    """Whether ``p`` is bit-identical to the last answer of any image: the key's last
    unflagged answer is always one of them (a flagged query since was given a copy of it)."""
    return bool((seen.answered & (seen.prev == p).all(axis=1)).any())


def ladder_search(
    lo: IntArray, hi: IntArray, rows: IntArray, level: IntArray, ok: BoolArray
) -> IntArray:
    """One step of a binary search per row for the lowest ladder level that passes, with
    ``lo`` the highest level known refused and ``hi`` the lowest known to pass (updated in
    place): the rows whose search closed."""
    hi[rows] = np.where(ok, level, hi[rows])
    lo[rows] = np.where(ok, lo[rows], level)
    out: NDArray[np.int64] = rows[hi[rows] - lo[rows] <= 1]
    return out
