"""One image's window onto the oracle, as a library sees it: every model call the library makes
is a counted, budgeted query, watched for success by our goal inside our ball."""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray

from ..attacks.balls import Ball
from ..attacks.goals import Goal
from ..errors import TargetUnavailable, UserInputError
from ..oracle import LabelsObservation, Observation, Oracle, QueryKind
from ..results import StepRecord

__all__ = ["Stop", "Tracker", "log_probs", "one_hot", "seeded"]

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]

_MEMO_SIZE = 4096  # answers kept per image for byte-identical repeats (reuse_answers)


class Stop(Exception):  # noqa: N818 - a control-flow signal, like StopIteration
    """Unwinds out of a library: ``success`` (we have our image), ``budget``, ``peer_error``
    (the library asked a non-finite image), or a TargetUnavailable's stop reason (``quota``,
    ``remote_unavailable``, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Tracker:
    """One image's window onto the oracle: charges, budgets and watches every library call."""

    oracle: Oracle
    ids: IntArray  # (1,): the oracle id of this image
    x0: FloatArray  # (C, H, W)
    target: int  # -1: untargeted
    ball: Ball
    goal: Goal
    render: Callable[[Observation], FloatArray]  # observation -> what the library gets (B, K)
    quantize_queries: bool  # round every query onto the 8-bit grid inside the ball
    reuse_answers: bool
    by_score: bool  # fallback image: best target score in the box (else: nearest target hit)
    total_reserve: int  # queries the shared total keeps back (this image's and later images')
    image: int
    on_call: Callable[[Tracker], None]
    kind: QueryKind = QueryKind.LINE_SEARCH
    init_images: list[FloatArray] = field(default_factory=list)
    orig: int = -1
    calls: int = 0
    candidate: FloatArray | None = None
    queries_at_success: int = -1
    best: FloatArray | None = None
    best_key: float = -np.inf
    target_prob: float = np.nan
    target_rank: int = -1
    trace: list[StepRecord] = field(default_factory=list)
    memo: OrderedDict[bytes, FloatArray] = field(default_factory=OrderedDict)

    @contextmanager
    def charging(self, kind: QueryKind) -> Iterator[None]:
        """Charge the queries made inside the block as ``kind``."""
        before = self.kind
        self.kind = kind
        try:
            yield
        finally:
            self.kind = before

    def can_pay(self, n: int) -> bool:
        return bool(
            self.oracle.affordable(self.ids, n, reserve=1, total_reserve=self.total_reserve)[0]
        )

    def ask(self, x: NDArray[np.floating], record: bool = True) -> FloatArray:
        """Answer a library's batch (B, C, H, W): counted, budgeted, and watched for success.

        Raises Stop("budget") before a call the budget cannot pay (nothing is charged),
        Stop("peer_error") for a NaN or infinite image (nothing is charged) and Stop("success")
        after the call that produced the result.
        """
        xb = np.asarray(x, dtype=np.float32).reshape(-1, *self.x0.shape)
        if not np.isfinite(xb).all():  # ART's L2 Square divides by a zero window norm
            raise Stop("peer_error")
        qb = np.clip(xb, *self.oracle.bounds).astype(np.float32)
        if self.quantize_queries:
            qb = self.ball.quantize_inside(qb, np.broadcast_to(self.x0, qb.shape))
        out = np.empty((len(xb), self.oracle.num_classes), dtype=np.float32)
        new: list[int] = []
        repeats: list[tuple[int, int]] = []  # (row, the row of this batch it repeats)
        keys: list[bytes] = []
        if self.reuse_answers:
            first: dict[bytes, int] = {}
            for j, row in enumerate(qb):
                key = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
                keys.append(key)
                if key in self.memo:
                    self.memo.move_to_end(key)
                    out[j] = self.memo[key]
                elif key in first:
                    repeats.append((j, first[key]))
                else:
                    first[key] = j
                    new.append(j)
        else:
            new = list(range(len(qb)))
        if not new:
            return out
        q = qb[new]
        is_init = len(q) <= len(self.init_images) and all(
            any(np.array_equal(r, im) for im in self.init_images) for r in q
        )
        if not self.can_pay(len(q)):
            raise Stop("budget")
        try:
            obs = self.oracle.query(
                q, np.repeat(self.ids, len(q)), QueryKind.INIT if is_init else self.kind
            )
        except TargetUnavailable as e:  # unwind the library; the best image so far is kept
            raise Stop(e.stop_reason) from e
        if self.orig < 0:  # the first query of every image is its clean image
            self.orig = int(obs.top1()[0])
        rendered = self.render(obs)
        out[new] = rendered
        for j, src in repeats:
            out[j] = out[src]
        if self.reuse_answers:
            for j, row in zip(new, rendered, strict=True):
                self.memo[keys[j]] = row
                if len(self.memo) > _MEMO_SIZE:
                    self.memo.popitem(last=False)
        hit = self._watch(q, obs)
        if record:
            self.calls += 1
            self.trace.append(
                StepRecord(
                    image=self.image,
                    step=self.calls,
                    queries=int(self.oracle.queries(self.ids)[0]),
                    loss=None,
                    target_prob=None if np.isnan(self.target_prob) else self.target_prob,
                    target_rank=self.target_rank if self.target_rank >= 0 else None,
                    eps=self.ball.eps,
                    lr=0.0,
                )
            )
            self.on_call(self)
        if hit:
            raise Stop("success")
        return out

    def hit(self, obs: Observation) -> NDArray[np.bool_]:
        n = len(obs)
        return self.goal.hit(obs, np.full(n, self.target), np.full(n, self.orig))

    def _watch(self, q: FloatArray, obs: Observation) -> bool:
        """Track the target's score/rank and the fallback image; return whether we succeeded."""
        t = np.full(len(q), max(self.target, 0), dtype=np.int64)
        goal = self.hit(obs)
        rank = obs.rank_of(t)
        shown = rank[rank >= 0]
        self.target_rank = int(shown.min()) if len(shown) else -1
        score = (
            np.full(len(q), np.nan, np.float32)
            if isinstance(obs, LabelsObservation)
            else obs.score_of(t)
        )
        finite = np.isfinite(score)
        self.target_prob = float(score[finite].max()) if finite.any() else np.nan
        x0 = np.broadcast_to(self.x0, q.shape)
        dist = self.ball.distance(q, x0)
        inside = self.ball.contains(q, x0)
        if self.by_score and self.target >= 0:
            key = np.where(inside & finite, score, -np.inf)
        else:
            key = np.where(goal, -dist, -np.inf)
        j = int(np.argmax(key))
        if key[j] > self.best_key:
            self.best_key = float(key[j])
            self.best = q[j].copy()
        hits = np.flatnonzero(goal & inside)
        if not len(hits):
            return False
        # What counts is the image we would save: the hit rounded to 8 bits inside the ball.
        j = int(hits[0])
        cand = self.ball.quantize_inside(q[j : j + 1], self.x0[None])
        if not np.array_equal(cand, q[j : j + 1]):
            if not self.can_pay(1):
                return False
            check = self.oracle.query(cand, self.ids, QueryKind.SUCCESS_CHECK)
            if not self.hit(check)[0]:
                return False
        self.candidate = cand[0]
        self.queries_at_success = int(self.oracle.queries(self.ids)[0])
        return True


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed the global RNGs the libraries draw from (torch CPU, numpy, random) and put the
    caller's states back afterwards, so a run neither depends on nor leaks global RNG state."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    cuda: list[int] = []
    if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        cuda = list(range(torch.cuda.device_count()))
    with torch.random.fork_rng(devices=cuda):
        try:
            torch.default_generator.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def log_probs(obs: Observation) -> FloatArray:
    """Log-probabilities: logits whose softmax is the model's probability vector."""
    probs = getattr(obs, "probs", None)
    if probs is None:  # check_view keeps this from happening
        raise UserInputError("this baseline needs the full scores view")
    out: FloatArray = np.log(np.maximum(np.asarray(probs, np.float64), 1e-38)).astype(np.float32)
    return out


def one_hot(obs: Observation, k: int) -> FloatArray:
    top = obs.top1()
    out = np.zeros((len(top), k), dtype=np.float32)
    out[np.arange(len(top)), top] = 1.0
    return out
