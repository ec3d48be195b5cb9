"""Adaptive Square: Square Attack made to get past stateful defences the way OARS does (Feng,
Hooda, Mangaokar, Fawaz, Jha, Prakash, CCS 2023): a refusal is a signal, not a stop."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from numpy.typing import NDArray

from ...defenses.aaa import fits, unattract
from ...oracle import Oracle, QueryKind, ScoresObservation, frozen_array
from .._windows import side
from ..base import AttackState, BoolArray, FloatArray, IntArray
from ..registry import Paper, register
from ._refusals import ask_each, ladder_search
from ._scatter import choose, dither, scattered, snap, tally
from ._screen import Screen, make_screen, remember, screen_rows
from .adaptive_config import AdaptiveSquareConfig, AdaptiveSquareState
from .square import SquareAttack

__all__ = ["OARS_2023", "AdaptiveSquareAttack", "AdaptiveSquareConfig", "AdaptiveSquareState"]

OARS_2023 = Paper(
    title="Stateful Defenses for Machine Learning Models Are Not Yet Secure Against Black-box "
    "Attacks",
    authors="Feng, Hooda, Mangaokar, Fawaz, Jha, Prakash",
    venue="CCS 2023",
    arxiv="2303.06280",
)
_HALVINGS = 9  # the ladder reaches down to p_init / 2^9, where Square's schedule ends
_MOST_WINDOWS = 256  # scattered windows per candidate, at most (larger ones beyond that)


@register(
    "adaptive-square",
    rank=130,  # listed after the attacks it adapts: a defence-specific one
    paper=OARS_2023,
    views=("scores",),
    norms=("linf", "l2"),
    budget=10_000,
    against=("blacklight", "piha", "stateful", "rnd", "aaa"),
    adapts="square",
)
class AdaptiveSquareAttack(SquareAttack):
    """Square Attack behind a defence: calibrate the window size to what is not rejected, then
    redraw rejected steps instead of stopping.

    Paper: Feng, Hooda, Mangaokar, Fawaz, Jha, Prakash, "Stateful Defenses for Machine
    Learning Models Are Not Yet Secure Against Black-box Attacks", CCS 2023
    (arXiv:2303.06280), OARS's two mechanisms on Square Attack (Andriushchenko et al., ECCV
    2020, arXiv:1912.00049). Threat model: full scores (QL, the ``Scores`` view), a defence
    in front of the target that rejects (or bans, or answers silently) queries it flags. Not
    for PI/LO: Square's loss needs the score vector. Norms: L∞ and L2, as Square.

    * **Calibration.** A similarity detector (Blacklight, PIHA, stateful detection) flags a
      query close to one it has stored, so Square's small windows are rejected and large ones
      pass. Before its first step each image searches a geometric ladder of window fractions
      p_init / 2^9 ... 1 (binary search, one counted probe per level tried: about 4) for the
      smallest p whose move is not rejected; that p is a floor under Square's schedule. (The
      issue words it as "the largest move that is not rejected"; against a detector of
      similar queries, the moves that pass are the large ones, and OARS keeps the smallest of
      them, which is what Square converges best with.) Each probe is a real Square candidate:
      kept when it lowers the loss.
    * **Redraws.** A rejected step changes nothing and is redrawn at the next step (a new
      random window and signs); after ``raise_after`` rejections in a row the floor goes up a
      level (the defence's store grows as the attack goes on).
    * **Scattered windows** (L∞, ``scatter``). Where the floor is above Square's own window,
      one window of the floor's size is a poor move: near the top it is the whole image with
      one sign per channel, 8 candidates a detector has all stored after their first query
      (Lite0 at ε = 0.01 behind Blacklight: 990 of 1,000 queries refused). The floor's area
      goes into several windows of Square's size instead, each with its own place and signs:
      as large a move, never a stored one. On a model that reads only broad colour, though,
      windows of independent signs average away, and one large window is what moves it:
      with ``scatter = auto`` each image keeps a tally of how often each kind of move was
      kept and picks the one with the higher upper confidence bound (UCB1). Below the floor
      nothing changes: where nothing is refused, the run is Square's, query for query.
    * **Dither** (L∞, ``dither``; our addition, not OARS's). Blacklight hashes windows of
      8-bit values quantised in steps of 50, so a Square step changes few of an image's
      hashes. Once an image has met a rejection, each candidate gets a fresh random half of
      its values moved 1 level (of 255) towards the clean image: about 1 value in 100 then
      changes its quantisation bin, most 50-value windows change, and the candidate shares
      fewer than T of its top hashes with any stored query, while the model barely sees it.
      Rejections in a row raise the dither (up to ``dither`` levels) before they raise the
      window floor. Beyond 2 levels the dither is by block (``dither_grid``): per block and
      channel only values whose way to the clean image is one random direction move, so the
      block means shift, which PIHA's hash of block hues sees. The iterate is snapped back to
      the vertices before each step, so dithers never add up. Stateful detection (an
      embedding's nearest neighbours) is not fooled by it.
    * **KeyBanned** ends the run with stop reason ``banned``: the key is dead.
    * **RND** (input noise): ``eot`` queries per point, their scores averaged (EOT), each
      counted. A remote target's journal answers a repeated input from its records, so EOT
      only helps where the noise is added on this side of the journal (a local defence).
    * **AAA** (a reversed loss trend around attractors): ``flip_after`` > 0 flips the search
      direction after that many steps in a row without a kept window (greedy Square stalls at
      an attractor interval's edge; flipped, it walks the true loss down within the interval,
      and the last interval's edge is the decision boundary: the label, which AAA never
      changes, shows the success). With ``aaa_tau`` (and ``aaa_beta``) the attacker knows
      the defence's parameters, as Kerckhoffs would have it: every answer's margin is
      mapped back to the model's (:func:`~bbattack.defenses.aaa.unattract`) before the loss,
      and the run is Square's undefended run, query for query; the goal is judged on the
      answer as given. An answer whose margin falls in a gap AAA at those settings never
      shows (:func:`~bbattack.defenses.aaa.fits`) proves them wrong, or AAA absent: from
      then on that image's answers are taken as given, and ``flip_after`` applies.
    * **Silent** defences (a flagged query is answered with the key's last unflagged answer)
      give no refusal, but the attacker still sees it: a score vector bit-identical to the
      last answer any image was given, for a different query, does not happen by chance (in a
      batch the key's last answer is often another image's). With ``stale`` such an answer
      counts as a rejection (not kept, and it raises the floor). A silent defence that
      answered fresh noise instead would leave no such trace.
    * **Screen** (L∞, ``screen``; ours). The attacker assumes a similarity detector and its
      published parameters (``screen = "piha"``): it keeps that detector's key of every query
      it sends and checks each draw against them first. A draw it would flag is not sent but
      redrawn (up to ``screen_tries`` draws, the last sent whatever it shows), and counts as
      a refusal that cost nothing: every ``raise_after`` of them raise the dither, then the
      floor. Its own queries are what flag it; other clients' photos are far away.

    Every query is counted under its kind: probes (``probe``), steps (``line_search``), EOT
    samples, rejected and stale queries alike. Query cost per step: ``eot`` (1 by default).
    Also: 1 for the clean image, ``eot`` for the start image, about 4 calibration probes
    (steps themselves), 1 for the final verification. Each image is queried on its own, so a
    refusal of one image's query never takes down another's.
    """

    config_class = AdaptiveSquareConfig
    config: AdaptiveSquareConfig

    @functools.cached_property
    def _screen(self) -> Screen | None:
        return None if self.config.screen is None else make_screen(self.config.screen)

    def init_queries(self, start_given: bool) -> int:
        return 1 + self.config.eot

    def prepare(self, oracle: Oracle, state: AttackState) -> AdaptiveSquareState:
        base = super().prepare(oracle, state)
        n, k = len(state.x), oracle.num_classes
        p_min = self.config.initial_p(state.targeted) / 2.0**_HALVINGS
        top = np.ceil(np.log2(1.0 / p_min)).astype(np.int64)
        calibrating = self.config.calibrate
        return AdaptiveSquareState(
            **{f.name: getattr(base, f.name) for f in dataclasses.fields(base)},
            top=top,
            cal_lo=np.full(n, -1, np.int64),
            cal_hi=top + 1 if calibrating else np.full(n, -1, np.int64),
            floor=np.full(n, -1, np.int64),
            streak=np.zeros(n, np.int64),
            fails=np.zeros(n, np.int64),
            direction=np.ones(n),
            undo=np.full(n, self.config.aaa_tau is not None),
            rejected=np.zeros(n, np.int64),
            prev=np.zeros((n, k), np.float32),
            answered=np.zeros(n, bool),
            grain=np.zeros(n, np.int64),
            tries=np.zeros((n, 2), np.int64),
            kept=np.zeros((n, 2), np.int64),
            held=np.zeros((0, self._screen.width if self._screen else 0), np.uint64),
            owner=np.zeros(0, np.int64),
        )

    # -- queries

    def _ask(
        self,
        oracle: Oracle,
        state: AttackState,
        rows: IntArray,
        x: FloatArray,
        kinds: list[QueryKind],
        keys: NDArray[np.uint64] | None = None,
    ) -> tuple[BoolArray, ScoresObservation]:
        """Each row's image on its own (``eot`` times, averaged): whether it was answered
        (not refused, not stale), and the answers (zeros where not). KeyBanned is raised.
        ``keys``: the screen's keys of ``x``, where the screen computed them."""
        own = self.own(state, AdaptiveSquareState)
        c = self.config
        if self._screen is not None:  # the defence stores refused queries too
            own.held, own.owner = remember(self._screen, own.held, own.owner, x, rows, keys)
        return ask_each(oracle, state.ids, rows, x, kinds, own, eot=c.eot, stale=c.stale)

    def loss_of(
        self, obs: ScoresObservation, state: AttackState, rows: IntArray
    ) -> NDArray[np.float64]:
        """Square's loss, of the model's answer where AAA's is undone (``aaa_tau``); the
        goal is judged on the answer as given (AAA never changes the top label)."""
        c = self.config
        if c.aaa_tau is None:
            return super().loss_of(obs, state, rows)
        own = self.own(state, AdaptiveSquareState)
        wrong = own.undo[rows] & ~fits(obs.probs, c.aaa_tau, c.aaa_beta)
        if wrong.any():  # the settings are not the target's: its answers as given, from now
            own.undo[rows[wrong]] = False
            # Its loss was kept in undone units: this answer, kept, re-anchors it (one step).
            state.loss[rows[wrong]] = np.inf
        use = own.undo[rows][:, None]
        probs = np.where(use, unattract(obs.probs, c.aaa_tau, c.aaa_beta), obs.probs)
        return super().loss_of(ScoresObservation(frozen_array(probs)), state, rows)

    # -- init

    def init(self, oracle: Oracle, state: AttackState, start: FloatArray | None) -> None:
        ch, h, w = state.x.shape[1:]
        clean = self.scores(self.clean_query(oracle, state))
        own = state.own = self.prepare(oracle, state)
        own.prev[:], own.answered[:] = clean.probs, True
        if self._screen is not None:
            every = np.arange(len(state.x0))
            own.held, own.owner = remember(self._screen, own.held, own.owner, state.x0, every)
        live = np.flatnonzero(state.active)
        if not len(live):
            return
        # Where the start image is refused, the clean image is the iterate.
        state.loss[live] = self.loss_of(ScoresObservation(clean.probs[live]), state, live)
        if own.hi is not None and own.lo is not None:  # L∞
            stripes = own.rng.signs(live, ch * w).reshape(-1, ch, 1, w)
            x = np.where(stripes > 0, own.hi[live], own.lo[live]).astype(np.float32)
        else:
            x = self._l2_start(state, live, own.rng, ch, h, w)
        ok, obs = self._ask(oracle, state, live, x, [QueryKind.INIT] * len(live))
        self._take(oracle, state, live, x, ok, obs, np.ones(len(live), bool))

    # -- step

    def step(self, oracle: Oracle, state: AttackState) -> None:
        rows = self.affordable_rows(oracle, state, self.config.eot)
        if not len(rows):
            return
        own = self.own(state, AdaptiveSquareState)
        _, h, w = state.x.shape[1:]
        probing = own.cal_hi[rows] - own.cal_lo[rows] > 1
        level = np.where(probing, (own.cal_lo[rows] + own.cal_hi[rows]) // 2, own.floor[rows])
        p_sq, p_floor = self._p(state, rows), self._ladder(state, rows, level)
        keys = None
        if self.config.norm == "linf":
            met = rows[(own.rejected[rows] > 0) & (own.grain[rows] == 0)]
            own.grain[met] = min(1, self.config.dither)
            cand, above, spread = self._linf_draw(state, rows, p_sq, p_floor)
            if self._screen is not None:
                keys = self._screened(state, rows, probing, p_sq, p_floor, (cand, above, spread))
        else:
            s = side(np.maximum(p_sq, p_floor), h, w, least=3)
            cand = self._l2_candidates(state, rows, own.rng, s, h, w)
            above = spread = np.zeros(len(rows), bool)
        kinds = [QueryKind.PROBE if b else QueryKind.LINE_SEARCH for b in probing]
        ok, obs = self._ask(oracle, state, rows, cand, kinds, keys)
        keep = self._take(oracle, state, rows, cand, ok, obs, np.zeros(len(rows), bool))
        tally(own.tries, own.kept, rows[above], spread[above], keep[above])
        self._calibrate(own, rows[probing], level[probing], ok[probing])
        self._adapt(own, rows[~probing], ok[~probing])

    def _screened(
        self,
        state: AttackState,
        rows: IntArray,
        probing: BoolArray,
        p_sq: NDArray[np.float64],
        p_floor: NDArray[np.float64],
        drawn: tuple[FloatArray, BoolArray, BoolArray],
    ) -> NDArray[np.uint64]:
        """Redraw, in place, each L∞ candidate the assumed detector would flag; the keys of
        the candidates that stand. A flagged draw counts as a refusal that cost nothing: every
        ``raise_after`` of them raise the row's dither a level, and past ``dither`` its floor
        (not while calibrating)."""
        own = self.own(state, AdaptiveSquareState)
        cand, above, spread = drawn
        draws = np.zeros(len(rows), np.int64)

        def redraw(j: int) -> None:
            one, r = slice(j, j + 1), rows[j]
            draws[j] += 1
            if draws[j] % self.config.raise_after == 0:
                if own.grain[r] < self.config.dither:
                    own.grain[r] += 1
                elif not probing[j]:
                    own.floor[r] = min(max(own.floor[r], 0) + 1, own.top[r])
                    p_floor[one] = self._ladder(state, rows[one], own.floor[rows[one]])
            c, a, sp = self._linf_draw(state, rows[one], p_sq[one], p_floor[one])
            cand[j], above[j], spread[j] = c[0], a[0], sp[0]

        assert self._screen is not None
        tries = self.config.screen_tries
        return screen_rows(self._screen, own.held, own.owner, rows, cand, redraw, tries)

    def _linf_draw(
        self,
        state: AttackState,
        rows: IntArray,
        p_sq: NDArray[np.float64],
        p_floor: NDArray[np.float64],
    ) -> tuple[FloatArray, BoolArray, BoolArray]:
        """Each row's L∞ candidate, dithered where the row's grain says so (a fresh draw
        from each image's stream), with which rows were above Square's window and which of
        those scattered (see :meth:`_linf_steps`)."""
        own = self.own(state, AdaptiveSquareState)
        if own.hi is None or own.lo is None:
            raise TypeError("L∞ candidates are made of the ball's vertices; none here")
        _, h, w = state.x.shape[1:]
        dithered = rows[own.grain[rows] > 0]
        kept = state.x[dithered].copy()
        state.x[dithered] = snap(kept, state.x0[dithered], own.hi[dithered], own.lo[dithered])
        cand, above, spread = self._linf_steps(state, rows, own, p_sq, p_floor, h, w)
        state.x[dithered] = kept  # the iterate stays what the target answered
        self._dither(state, rows, cand, own.grain[rows] > 0)
        return cand, above, spread

    def _linf_steps(
        self,
        state: AttackState,
        rows: IntArray,
        own: AdaptiveSquareState,
        p_sq: NDArray[np.float64],
        p_floor: NDArray[np.float64],
        h: int,
        w: int,
    ) -> tuple[FloatArray, BoolArray, BoolArray]:
        """Each row's L∞ candidate: Square's own window where the floor is below it; above,
        the floor's area in one window or in several of Square's size (``scatter``). Also
        which rows were above, and which of them scattered."""
        s_sq = side(p_sq, h, w)
        k = np.ceil(p_floor * h * w / s_sq**2 - 1e-9).astype(np.int64)
        above = (p_floor > p_sq) & (k > 1)
        spread = np.zeros(len(rows), bool)
        spread[above] = choose(self.config.scatter, own.tries, own.kept, rows[above])
        cand = np.empty((len(rows), *state.x.shape[1:]), np.float32)
        if (~spread).any():  # exactly Square's step where nothing was ever refused
            s = side(np.maximum(p_sq, p_floor), h, w)[~spread]
            cand[~spread] = self._linf_candidates(state, rows[~spread], own.rng, s, h, w)
        if own.hi is None or own.lo is None:
            raise TypeError("L∞ candidates are made of the ball's vertices; this state has none")
        for j in np.flatnonzero(spread):
            n = int(min(k[j], _MOST_WINDOWS))
            size = int(max(s_sq[j], side(p_floor[j : j + 1] / n, h, w)[0]))
            r = int(rows[j])
            cand[j] = scattered(state.x[r], own.hi[r], own.lo[r], own.rng, r, n, size)
        return cand, above, spread

    def _dither(
        self, state: AttackState, rows: IntArray, cand: FloatArray, which: BoolArray
    ) -> None:
        """Dither the candidates of ``which`` rows in place (``dither`` levels; a fresh draw
        from each image's own stream)."""
        own = self.own(state, AdaptiveSquareState)
        j = np.flatnonzero(which)
        if not len(j) or own.hi is None or own.lo is None:
            return
        r = rows[j]
        ch, g = cand.shape[1], self.config.dither_grid
        u = own.rng.uniform(r, int(np.prod(cand.shape[1:])) + ch * g * g)
        cand[j] = dither(cand[j], state.x0[r], own.hi[r], own.lo[r], u, own.grain[r], g)

    def _ladder(self, state: AttackState, rows: IntArray, level: IntArray) -> NDArray[np.float64]:
        """The window fraction of each row's ladder ``level`` (0 where -1: no floor)."""
        p_min = self.config.initial_p(state.targeted[rows]) / 2.0**_HALVINGS
        at = np.minimum(p_min * 2.0 ** np.maximum(level, 0).astype(np.float64), 1.0)
        return np.asarray(np.where(level >= 0, at, 0.0))

    def _take(
        self,
        oracle: Oracle,
        state: AttackState,
        rows: IntArray,
        cand: FloatArray,
        ok: BoolArray,
        obs: ScoresObservation,
        always: BoolArray,
    ) -> BoolArray:
        """Keep answered candidates that improve the loss in the row's direction, reach the
        goal, or (``always``: the start image) are answered at all. Returns what was kept."""
        own = self.own(state, AdaptiveSquareState)
        got = rows[ok]
        answered = ScoresObservation(obs.probs[ok])
        loss = np.full(len(rows), np.inf)
        hit = np.zeros(len(rows), bool)
        if len(got):
            loss[ok] = self.loss_of(answered, state, got)
            hit[ok] = self.goal_hit(state, answered, got)
        better = own.direction[rows] * (loss - state.loss[rows]) < 0
        keep = ok & (better | hit | always)
        k = rows[keep]
        own.since[rows] = np.where(keep, 0, own.since[rows] + 1)
        own.last_rc[rows[~keep]] = -1
        own.fails[rows] = np.where(keep, 0, own.fails[rows] + 1)
        state.x[k] = cand[keep]
        state.xq[k] = cand[keep]
        state.loss[k] = loss[keep]
        self.record(ScoresObservation(obs.probs[keep]), state, k)
        self.mark_success(oracle, state, rows[ok], hit[ok])
        return keep

    @staticmethod
    def _calibrate(
        own: AdaptiveSquareState, rows: IntArray, level: IntArray, ok: BoolArray
    ) -> None:
        """One step of the ladder search; a row whose search closed takes its floor."""
        done = ladder_search(own.cal_lo, own.cal_hi, rows, level, ok)
        # Nothing passed (cal_hi past the top): the floor is the whole image, and redraws.
        own.floor[done] = np.minimum(own.cal_hi[done], own.top[done])

    def _adapt(self, own: AdaptiveSquareState, rows: IntArray, ok: BoolArray) -> None:
        """After a step: raise the floor after ``raise_after`` rejections in a row; flip the
        direction after ``flip_after`` steps in a row without a kept window."""
        own.streak[rows] = np.where(ok, 0, own.streak[rows] + 1)
        up = rows[own.streak[rows] >= self.config.raise_after]
        # A finer dither first (it costs the loss least), then a larger window.
        finer = (own.grain[up] > 0) & (own.grain[up] < self.config.dither)
        own.grain[up[finer]] += 1
        wider = up[~finer]
        own.floor[wider] = np.minimum(np.maximum(own.floor[wider], 0) + 1, own.top[wider])
        own.streak[up] = 0
        if self.config.flip_after:
            flip = rows[(own.fails[rows] >= self.config.flip_after) & ~own.undo[rows]]
            own.direction[flip] *= -1.0
            own.fails[flip] = 0
