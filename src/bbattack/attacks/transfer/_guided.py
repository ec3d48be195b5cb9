"""The surrogate-guided ε-shrink for targeted attacks under top-k or label views: start at a
radius where the target shows the target class, then re-craft on the surrogates inside ever
smaller balls, one query per candidate, keeping each that the target still shows as the
target class. The paper's PI outer loop (Ilyas et al. 2018, Alg. 2), with the surrogates
proposing every step instead of NES."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ...errors import StartImageError
from ...oracle import LabelsObservation, Observation, Oracle, QueryKind
from .._losses import visible_margin
from .._start import check_start, find_start_images
from ..base import Attack, AttackState, IntArray
from ._transfer_state import GuidedState, TransferState

__all__ = ["SHRINK", "START", "GuidedShrink"]

START, SHRINK = 1, 2  # the transfer attack's phases that this module runs
_LEVELS = 255  # radii live on the 8-bit grid: level k is an L∞ radius of k/255


class GuidedShrink:
    """Runs the START and SHRINK phases of a :class:`~bbattack.attacks.transfer.transfer.
    TransferAttack` (``attack``: its config, ``craft``, ``calibrate`` and bookkeeping).

    Query cost: 1 per start radius tried (``transfer``), the start image's check or the
    bundled-photo search (``init``) where no radius works, then 1 per shrink candidate
    (``transfer``). A candidate is kept when the target shows the target class in what the
    view reveals; the step (in 8-bit levels) doubles on a keep and halves on a miss.
    """

    def __init__(self, attack: Any) -> None:
        self.attack = attack
        self.config = attack.config

    def prepare(self, state: AttackState) -> GuidedState:
        """The shrink's state for every row (no queries)."""
        n = len(state.x)
        k_eps = np.floor(state.eps.astype(np.float64) * _LEVELS + 1e-6).astype(np.int64)
        return GuidedState(
            level=np.full(n, _LEVELS, np.int64),
            k_eps=k_eps,
            delta=np.full(n, self.config.delta, np.int64),
            radius=np.zeros(n, np.int64),
            margin=np.full(n, -np.inf),
            miss=np.zeros(n, np.int64),
        )

    @staticmethod
    def _states(state: AttackState) -> tuple[TransferState, GuidedState]:
        tr = Attack.own(state, TransferState)
        if tr.guided is None:
            raise TypeError("the guided shrink runs on a transfer state that has none")
        return tr, tr.guided

    def begin(self, state: AttackState, rows: IntArray) -> None:
        tr, gs = self._states(state)
        tr.phase[rows] = START
        gs.radius[rows] = 0

    def _radii(self) -> list[float]:
        return [r for r in self.config.start_radii if r > self.config.eps]

    # -- START: a larger ball where the target shows the target class

    def start_step(self, oracle: Oracle, state: AttackState, rows: IntArray) -> None:
        _, gs = self._states(state)
        radii = self._radii()
        i = gs.radius[rows]
        crafted = rows[i < len(radii)]
        if len(crafted):
            r = np.asarray(radii, np.float32)[gs.radius[crafted]]
            # Steps stay ε-sized (craft): the larger ball gives room, not larger steps. More
            # iterations to cross it measured no better (1 vs 2 of 10 stalled LO photos).
            cand = self.attack.craft(state, crafted, state.x[crafted], r, self.config.iters)
            obs = oracle.query(cand, state.ids[crafted], QueryKind.TRANSFER)
            self.attack.record(obs, state, crafted)
            self.attack.calibrate(state, crafted, obs, cand)
            seen = obs.rank_of(state.target[crafted]) >= 0
            gs.radius[crafted[~seen]] += 1
            level = np.ceil(r.astype(np.float64) * _LEVELS - 1e-6).astype(np.int64)
            gs.margin[crafted] = _margin(obs, state, crafted)
            self._shrink_from(state, crafted[seen], cand[seen], level[seen])
        photo = rows[i >= len(radii)]
        if len(photo):
            self._start_image(oracle, state, photo)

    def _start_image(self, oracle: Oracle, state: AttackState, rows: IntArray) -> None:
        """No radius worked: the given start image, else a bundled photo, checked through the
        oracle (``init`` queries)."""
        tr, _ = self._states(state)
        start = tr.start
        try:
            found = (
                find_start_images(self.attack, oracle, state, rows)
                if start is None
                else check_start(self.attack, oracle, state, rows, start[rows])
            )
        except StartImageError:  # no start: these images end; the others go on
            self.attack.stop(state, rows, "no_start_image")
            return
        tr.g[rows] = 0.0  # the momentum belonged to another image
        if self.config.photo_start == "query":
            # The surrogates missed the target class at every radius: across families their
            # shrink candidates mostly miss too, and the query attack does better from the photo.
            self.attack.from_photo(oracle, state, rows, found)
            return
        d = np.abs(found.astype(np.float64) - state.x0[rows]).reshape(len(rows), -1).max(1)
        state.x[rows] = found
        self._shrink_from(state, rows, found, np.ceil(d * _LEVELS - 1e-6).astype(np.int64))

    def _shrink_from(self, state: AttackState, rows: IntArray, x: Any, level: IntArray) -> None:
        tr, gs = self._states(state)
        tr.phase[rows] = SHRINK
        gs.level[rows] = level
        gs.delta[rows] = self.config.delta
        gs.miss[rows] = 0
        state.xq[rows] = x
        state.eps[rows] = level.astype(np.float32) / _LEVELS

    # -- SHRINK: re-craft inside a smaller ball, keep what the target still shows

    def shrink_step(self, oracle: Oracle, state: AttackState, rows: IntArray) -> None:
        _, gs = self._states(state)
        k_eps = gs.k_eps[rows]
        level = np.maximum(gs.level[rows] - gs.delta[rows], k_eps)
        r = (level / _LEVELS).astype(np.float32)
        before = state.x[rows].copy()
        x = state.ball.project(before, state.x0[rows], r)
        cand = self.attack.craft(state, rows, x, r, self.config.shrink_iters)
        obs = oracle.query(cand, state.ids[rows], QueryKind.TRANSFER)
        self.attack.record(obs, state, rows)
        self.attack.calibrate(state, rows, obs, cand)
        seen = obs.rank_of(state.target[rows]) >= 0
        keep, miss = rows[seen], rows[~seen]
        gs.level[keep] = level[seen]
        gs.margin[keep] = _margin(obs, state, rows)[seen]
        gs.miss[keep] = 0
        gs.miss[miss] += gs.delta[miss] == 1
        state.xq[keep] = cand[seen]
        state.eps[keep] = r[seen]
        gs.delta[keep] = np.minimum(gs.delta[keep] * 2, self.config.max_delta)
        gs.delta[miss] = np.maximum(gs.delta[miss] // 2, 1)
        state.x[miss] = before[~seen]
        hit = seen & (level <= k_eps) & self.attack.goal_hit(state, obs, rows)
        self.attack.mark_success(oracle, state, rows, hit)
        miss = gs.miss[rows]
        if oracle.view.reveals_scores and self.config.repair_after:
            stuck = rows[state.active[rows] & (miss >= self.config.repair_after)]
            if len(stuck):
                self.attack.repair(state, stuck, gs.level[stuck], gs.margin[stuck])
        # Label-only: no score to repair with; stop paying for candidates that keep missing.
        stuck = rows[state.active[rows] & (miss >= self.config.give_up)]
        if len(stuck) and not oracle.view.reveals_scores:
            self.attack.stuck(state, stuck)


def _margin(obs: Observation, state: AttackState, rows: IntArray) -> NDArray[np.float64]:
    if isinstance(obs, LabelsObservation):
        return np.full(len(rows), -np.inf)
    return visible_margin(obs, state.target[rows])
