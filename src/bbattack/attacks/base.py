"""The attack framework: frozen configs, plain-data state, and the one run loop.

An attack is a stepper. ``init`` builds a state dataclass of per-image arrays; ``step`` advances
every active image by one outer iteration, vectorised across images with masks. ``run`` owns the
loop, the per-step trace, the 8-bit quantisation and the counted final verification.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import TargetUnavailable
from ..oracle import LabelsObservation, Observation, Oracle, QueryKind, ScoresObservation
from ..results import AttackResult, StepRecord
from ..surrogates import Surrogate
from .balls import Ball, Norm, make_ball
from .checkpoint import restore_state, run_fingerprint
from .checks import check_budget, check_run, check_surrogates, run_inputs, with_overrides
from .finish import finish_run, step_records
from .goals import Goal
from .registry import AttackInfo
from .request import Runnable, RunRequest
from .request import StepInfo as StepInfo
from .state import AttackState as AttackState
from .state import BoolArray as BoolArray
from .state import FloatArray as FloatArray
from .state import IntArray as IntArray
from .state import RunContext

__all__ = ["Attack", "AttackConfig", "AttackState", "StepInfo", "noise_generator"]


class AttackConfig(BaseModel):
    """Hyperparameters shared by every attack. Frozen and validated; data goes to ``run``."""

    # allow_inf_nan: sigma=Infinity or lr=NaN would run, and fail far from the bad value.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    eps: float = Field(0.05, gt=0.0, description="radius of the ball, in [0, 1] pixel units")
    norm: Norm = Field("linf", description="the ball: linf or l2")
    max_steps: int | None = Field(None, ge=1, description="cap on outer iterations per image")
    max_rows: int = Field(
        2048, ge=1, description="images held in memory per NES batch; results do not depend on it"
    )

    @model_validator(mode="after")
    def _check_ball(self) -> AttackConfig:
        make_ball(self.norm, self.eps)  # an L∞ eps above 1 is refused here
        return self

    def ball(self) -> Ball:
        return make_ball(self.norm, self.eps)


C = TypeVar("C", bound=AttackConfig)
S = TypeVar("S")


class Attack(Runnable, Generic[C]):
    """Base class. Subclasses are declared with :func:`~bbattack.attacks.registry.register`
    (which sets ``name`` and ``info``), set ``config_class`` and implement init/step.

    The run loop owns the trace, the stall guard (an active image whose step spends no query
    stops as ``stalled``: a step that can neither pay nor stop is a bug, not a hang), the
    ``max_steps`` cap and the one finish path (:func:`~bbattack.attacks.finish.finish`).
    """

    name: ClassVar[str]
    info: ClassVar[AttackInfo]
    config_class: ClassVar[type[AttackConfig]]
    reserve: ClassVar[int] = 1  # queries kept back per image for the final verification

    def __init__(self, config: C | None = None, **overrides: Any) -> None:
        self.config: C = with_overrides(self.config_class, config, overrides)  # type: ignore[assignment]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({args})"

    # -- subclass interface

    @abstractmethod
    def init(self, oracle: Oracle, state: AttackState, start: FloatArray | None) -> None:
        """Spend the initial queries and fill attack-specific state."""

    @abstractmethod
    def step(self, oracle: Oracle, state: AttackState) -> None:
        """Advance every active image by one outer iteration, in place."""

    def check_view(self, oracle: Oracle) -> None:
        """Refuse, before any query, a config that means nothing under the oracle's view (an
        option the run would silently ignore). Nothing by default."""

    def init_queries(self, start_given: bool) -> int:
        """Queries per image before the first step (the clean image; start checks)."""
        return 1

    # -- helpers for subclasses

    @staticmethod
    def own(state: AttackState, kind: type[S]) -> S:
        """The attack's own typed state (checked: a wrong kind is a bug, and says so)."""
        if not isinstance(state.own, kind):
            raise TypeError(
                f"the attack state holds {type(state.own).__name__}, not {kind.__name__}"
            )
        return state.own

    @staticmethod
    def scores(obs: Observation) -> ScoresObservation:
        """``obs`` as full scores (an attack the registry runs only under a scores view)."""
        if not isinstance(obs, ScoresObservation):
            raise TypeError(f"expected full scores from the oracle, got {type(obs).__name__}")
        return obs

    @classmethod
    def query_scores(
        cls, oracle: Oracle, x: FloatArray, ids: IntArray, kind: QueryKind
    ) -> ScoresObservation:
        """Query under a scores view (the registry let only such a view through)."""
        return cls.scores(oracle.query(x, ids, kind))

    def clean_query(self, oracle: Oracle, state: AttackState) -> Observation:
        """The one INIT query of every image's clean version: sets its clean label, records
        the target's rank, and stops an image whose goal already holds (``already``)."""
        rows = np.arange(len(state.x))
        obs = oracle.query(state.x0, state.ids, QueryKind.INIT)
        state.orig[:] = obs.top1()
        self.record(obs, state, rows)
        self.mark_success(oracle, state, rows, self.goal_hit(state, obs, rows))
        return obs

    @staticmethod
    def goal_hit(state: AttackState, obs: Observation, rows: IntArray) -> BoolArray:
        """Whether the goal holds for ``rows`` in ``obs`` (one row of ``obs`` per row)."""
        return state.goal.hit(obs, state.target[rows], state.orig[rows])

    @staticmethod
    def mark_success(oracle: Oracle, state: AttackState, rows: IntArray, hit: BoolArray) -> None:
        """Record first successes among ``rows`` and stop those images."""
        new = rows[hit & ~state.success[rows]]
        if len(new):
            state.success[new] = True
            state.queries_at_success[new] = oracle.queries(state.ids[new])
            Attack.stop(state, new, "success")

    @staticmethod
    def record(
        obs: Observation, state: AttackState, rows: IntArray, mask: BoolArray | None = None
    ) -> None:
        """The target's rank, and its score where the view reveals one, in ``obs`` (one row
        per row of ``rows``), for the trace; only where ``mask``. Untargeted rows have none."""
        keep = np.ones(len(rows), bool) if mask is None else mask
        t = state.target[rows]
        tg = np.maximum(t, 0)
        state.target_rank[rows[keep]] = np.where(t >= 0, obs.rank_of(tg), -1)[keep]
        if not isinstance(obs, LabelsObservation):
            state.target_prob[rows[keep]] = np.where(t >= 0, obs.score_of(tg), np.nan)[keep]

    @staticmethod
    def quantized(
        state: AttackState, rows: IntArray, x: FloatArray, radius: NDArray[np.floating]
    ) -> FloatArray:
        """8-bit version of candidate iterates, kept inside their ball: what checks query."""
        return state.ball.quantize_inside(x, state.x0[rows], radius)

    @staticmethod
    def stop(state: AttackState, rows: IntArray, reason: str) -> None:
        rows = rows[state.active[rows]]
        state.active[rows] = False
        state.stop_reason[rows] = reason
        state.finished_at[rows] = state.ctx.elapsed()

    def can_pay(
        self, oracle: Oracle, state: AttackState, rows: IntArray, cost: int
    ) -> NDArray[np.bool_]:
        """Which ``rows`` can pay ``cost`` while every image of the run, running or finished,
        keeps its final-check reserve (per example and in the shared total)."""
        return oracle.affordable(
            state.ids[rows], cost, reserve=self.reserve, total_reserve=self.reserve * len(state.x)
        )

    def affordable_rows(self, oracle: Oracle, state: AttackState, cost: int) -> IntArray:
        """Active rows that can pay ``cost`` and keep the final-check reserve; stop the rest."""
        rows = np.flatnonzero(state.active)
        ok = self.can_pay(oracle, state, rows, cost)
        self.stop(state, rows[~ok], "budget")
        return rows[ok]

    # -- the run loop

    def execute(self, oracle: Oracle, request: RunRequest) -> AttackResult:
        """Run ``request`` through ``oracle`` (see :meth:`Runnable.run` and
        :meth:`Runnable.resume`): the checks, then ``init`` (or the checkpoint), then steps
        until no image is active, then the one finish path."""
        goal = Goal.of(request.success, oracle.class_names)
        xb, tgt, seeds, st = self._checked(oracle, request)
        saved = None
        if request.checkpoints is not None:
            fingerprint = run_fingerprint(
                self, oracle, xb, tgt, seeds, st, request.success, request.surrogates
            )
            request.checkpoints.bind(fingerprint)
            saved = request.checkpoints.load() if request.resume else None
        if saved is not None:
            oracle.restore(saved.oracle)
            ids = np.asarray(saved.state["ids"], np.int64)
        else:
            ids = oracle.register(len(xb))
        state = self._new_state(ids, xb, tgt, seeds, goal, request.surrogates)
        trace: list[StepRecord] = []
        step_no = 0
        if saved is None:
            try:
                self.init(oracle, state, st)
            except TargetUnavailable as e:  # keep what was paid for; nothing more can be sent
                self.stop(state, np.flatnonzero(state.active), e.stop_reason)
            if request.checkpoints is not None:
                request.checkpoints.step_done(0, state, oracle, trace)
        else:
            restore_state(state, saved)
            trace, step_no = saved.trace, saved.step
        self._loop(oracle, state, request, trace, step_no)
        return finish_run(self, oracle, state, trace, request.surrogates)

    def _checked(
        self, oracle: Oracle, request: RunRequest
    ) -> tuple[FloatArray, IntArray, IntArray, FloatArray | None]:
        """The request's inputs as batches, after every check a user's mistake can fail
        (before any query): the images, targets, seeds and start images."""
        check_run(self.info, oracle, self.config.norm, request.target is None, request.success)
        check_surrogates(self.info, request.surrogates)
        self.check_view(oracle)
        xb, tgt, seeds = run_inputs(
            oracle, request.x, request.target, request.seed, self.name, self.info.untargeted
        )
        check_budget(
            oracle,
            len(xb),
            self.init_queries(request.start is not None) + self.reserve,
            self.config.max_steps is not None,
            "the attack max_steps",
        )
        start = request.start
        st = None if start is None else np.asarray(start, dtype=np.float32).reshape(xb.shape)
        return xb, tgt, seeds, st

    def _loop(
        self,
        oracle: Oracle,
        state: AttackState,
        request: RunRequest,
        trace: list[StepRecord],
        step_no: int,
    ) -> None:
        """Step every active image until none is; the trace, the caps and the checkpoints."""
        max_steps = self.config.max_steps
        while state.active.any():
            was = np.flatnonzero(state.active)
            before = oracle.queries(state.ids[was])
            try:
                self.step(oracle, state)
            except TargetUnavailable as e:  # the last checked iterates are the result
                self.stop(state, np.flatnonzero(state.active), e.stop_reason)
                break
            q = oracle.queries(state.ids)
            # Only images that spent queries took a step (a budget stop spends none).
            spent = q[was] > before
            stepped = was[spent]
            self.stop(state, was[~spent], "stalled")
            state.steps[stepped] += 1
            step_no += 1
            if max_steps is not None:
                self.stop(state, stepped[state.steps[stepped] >= max_steps], "max_steps")
            trace.extend(step_records(state, stepped, q))
            if request.on_step is not None:
                request.on_step(_step_info(step_no, state, q))
            if request.checkpoints is not None and state.active.any():
                request.checkpoints.step_done(step_no, state, oracle, trace)

    def _new_state(
        self,
        ids: IntArray,
        xb: FloatArray,
        tgt: IntArray,
        seeds: IntArray,
        goal: Goal,
        surrogates: Sequence[Surrogate],
    ) -> AttackState:
        n = len(xb)
        return AttackState(
            ids=ids,
            x0=xb.copy(),
            x=xb.copy(),
            xq=xb.copy(),
            target=tgt,
            orig=np.full(n, -1, np.int64),
            seeds=seeds,
            rngs=[noise_generator(int(s)) for s in seeds],
            active=np.ones(n, bool),
            success=np.zeros(n, bool),
            queries_at_success=np.full(n, -1, np.int64),
            steps=np.zeros(n, np.int64),
            stop_reason=np.full(n, "running", dtype=object),
            eps=np.full(n, self.config.eps, np.float32),
            lr=np.zeros(n, np.float32),
            loss=np.full(n, np.nan, np.float32),
            target_prob=np.full(n, np.nan, np.float32),
            target_rank=np.full(n, -1, np.int64),
            finished_at=np.zeros(n),
            goal=goal,
            ball=self.config.ball(),
            ctx=RunContext(surrogates=tuple(surrogates)),
        )


def _step_info(step_no: int, state: AttackState, q: IntArray) -> StepInfo:
    return StepInfo(
        step_no,
        int(state.active.sum()),
        int(state.success.sum()),
        len(state.x),
        q,
        state.target_prob.copy(),
        state.target_rank.copy(),
        state.eps.copy(),
    )


def noise_generator(seed: int) -> Any:
    """A per-image noise stream. torch's CPU normal_/uniform_ are ~3x faster than numpy's and
    give the same numbers for a seed whatever the thread count or the split of the draws."""
    import torch

    mixed = int(np.random.SeedSequence(seed).generate_state(1, np.uint64)[0])
    return torch.Generator().manual_seed(mixed)
