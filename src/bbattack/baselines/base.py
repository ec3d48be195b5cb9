"""The base of every baseline: another library's attack behind our oracle, called exactly like
:class:`~bbattack.Attack`, judged by the same goal and finished by the same path."""

from __future__ import annotations

import importlib
import time
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..attacks.balls import Ball, Norm, make_ball
from ..attacks.checkpoint import CheckpointError
from ..attacks.checks import (
    check_budget,
    check_run,
    check_surrogates,
    run_inputs,
    with_overrides,
)
from ..attacks.finish import Ending, finish
from ..attacks.goals import Goal
from ..attacks.registry import AttackInfo
from ..attacks.request import Runnable, RunRequest, StepInfo
from ..errors import BackendUnavailableError
from ..oracle import Observation, Oracle, QueryKind
from ..results import AttackResult, ImageResult, StepRecord
from .tracker import Stop, Tracker, seeded

__all__ = ["INSTALL_HINT", "UNBOUNDED_ITERS", "Baseline", "BaselineConfig", "library"]

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]

INSTALL_HINT = "pip install 'bbattack[baselines]' and pip install --no-deps torchattacks"
UNBOUNDED_ITERS = 10**9  # "until the budget runs out": the oracle's budget is the real cap


def library(module: str, package: str) -> Any:
    """Import an optional library, or raise BackendUnavailableError with the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise BackendUnavailableError(
            f"this baseline needs {package}, which is not installed ({e}); install it with: "
            f"{INSTALL_HINT}"
        ) from None


class BaselineConfig(BaseModel):
    """Settings shared by every baseline. Frozen and validated; data goes to ``run``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    eps: float = Field(0.05, gt=0.0, description="radius of the ball, in [0, 1] pixel units")
    norm: Norm = Field("linf", description="the ball: linf or l2")
    max_iter: int | None = Field(
        None,
        ge=1,
        description="the library's iteration cap per image; None: until the oracle's budget "
        "is spent (then the oracle needs a budget)",
    )
    reuse_answers: bool = Field(
        False,
        description="answer a query for an image already asked in this image's run (byte for "
        "byte, as sent) from memory instead of charging it again; the model is deterministic",
    )

    @model_validator(mode="after")
    def _check_ball(self) -> BaselineConfig:
        make_ball(self.norm, self.eps)
        return self

    def ball(self) -> Ball:
        return make_ball(self.norm, self.eps)


C = TypeVar("C", bound=BaselineConfig)


class _Progress:
    """What ``on_step`` callbacks see across the images of a run: one step per library call."""

    def __init__(
        self, oracle: Oracle, ids: IntArray, eps: float, on_step: Callable[[StepInfo], None] | None
    ) -> None:
        n = len(ids)
        self.oracle, self.ids, self.eps, self.on_step = oracle, ids, eps, on_step
        self.step = 0
        self.succeeded = 0
        self.prob = np.full(n, np.nan, np.float32)
        self.rank = np.full(n, -1, np.int64)

    def on_call(self, tr: Tracker) -> None:
        self.step += 1
        self.prob[tr.image] = tr.target_prob
        self.rank[tr.image] = tr.target_rank
        if self.on_step is not None:
            n = len(self.ids)
            self.on_step(
                StepInfo(
                    self.step,
                    n - tr.image,
                    self.succeeded,
                    n,
                    self.oracle.queries(self.ids),
                    self.prob.copy(),
                    self.rank.copy(),
                    np.full(n, self.eps, np.float32),
                )
            )


@dataclass(frozen=True)
class _One:
    """One image of a run: its oracle id, index, pixels, target, seed, and how many follow."""

    ids: IntArray
    i: int
    x0: FloatArray
    target: int
    seed: int
    later: int


@dataclass
class _Outcome:
    x: FloatArray  # the saved 8-bit image
    result: ImageResult
    trace: list[StepRecord]


class Baseline(Runnable, Generic[C]):
    """A library's attack behind the oracle. Called exactly like :class:`~bbattack.Attack`.

    Subclasses are declared with :func:`~bbattack.attacks.registry.register` (views, norms,
    targeted/untargeted, start image), set ``config_class`` and implement ``_require``,
    ``_render`` and ``_attack``.
    """

    name: ClassVar[str]
    info: ClassVar[AttackInfo]
    config_class: ClassVar[type[BaselineConfig]]
    quantize_queries: ClassVar[bool] = False
    fallback_by_score: ClassVar[bool] = True

    def __init__(self, config: C | None = None, **overrides: Any) -> None:
        self.config: C = with_overrides(self.config_class, config, overrides)  # type: ignore[assignment]
        self._require()  # a missing library is an error now, not in the middle of a run

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({args})"

    # -- subclass interface

    @abstractmethod
    def _require(self) -> Any:
        """Import the library (BackendUnavailableError if it is missing) and return it."""

    @abstractmethod
    def _render(self, obs: Observation, k: int) -> FloatArray:
        """Turn an observation into what the library's model returns (B, K)."""

    @abstractmethod
    def _attack(
        self, tracker: Tracker, x0: FloatArray, seed: int, start: FloatArray | None
    ) -> FloatArray | None:
        """Run the library on one image through ``tracker``; return its output (C, H, W)."""

    def _iterations(self, tracker: Tracker, overhead: int, restarts: int = 1) -> int:
        """``max_iter``, or the queries this image can still spend (less the final check and
        the library's ``overhead`` of its own checks) split over ``restarts``: one query per
        iteration, so that the library's schedule stretches over the budget."""
        if self.config.max_iter is not None:
            return self.config.max_iter
        left = int(tracker.oracle.remaining(tracker.ids)[0])
        left = min(left, tracker.oracle.total_remaining() - tracker.total_reserve + 1)
        return max(1, min((left - 1 - overhead) // restarts, UNBOUNDED_ITERS))

    # -- the run

    def execute(self, oracle: Oracle, request: RunRequest) -> AttackResult:
        """Attack ``request``'s images through ``oracle``; the arguments and result are those
        of :meth:`bbattack.Attack.run`. Images are attacked one after another; image i gets the
        seed ``seed + i`` (or ``seed[i]``). Raises StartImageError where a start image is
        needed and none works. ``checkpoints`` is accepted and unused: the library's loop holds
        its state, so none is written (an oracle's journal still records every query).

        A resume is refused: a library's attack keeps its state inside the library, so it
        cannot be continued exactly. Run it again: the journal answers the queries already
        paid."""
        if request.resume:
            raise CheckpointError(
                f"{self.name} runs inside its library and cannot be resumed exactly; run it "
                "again (--force): its journal answers the queries already paid"
            )
        goal = Goal.of(request.success, oracle.class_names)
        check_run(self.info, oracle, self.config.norm, request.target is None, request.success)
        check_surrogates(self.info, request.surrogates)
        self._require()
        xb, tgt, seeds = run_inputs(
            oracle, request.x, request.target, request.seed, self.name, self.info.untargeted
        )
        n = len(xb)
        # The clean query and the final verification.
        check_budget(oracle, n, 2, self.config.max_iter is not None, "the baseline max_iter")
        start = request.start
        st = None if start is None else np.asarray(start, dtype=np.float32).reshape(xb.shape)
        ids = oracle.register(n)
        progress = _Progress(oracle, ids, self.config.eps, request.on_step)
        outcomes: list[_Outcome] = []
        for i in range(n):
            one = _One(ids[i : i + 1], i, xb[i], int(tgt[i]), int(seeds[i]), n - i - 1)
            out = self._run_one(oracle, goal, one, None if st is None else st[i], progress.on_call)
            progress.succeeded += int(out.result.success)
            outcomes.append(out)
        return AttackResult(
            attack=self.name,
            threat=oracle.view.describe(),
            config=self.config.model_dump(mode="json"),
            images=[o.result for o in outcomes],
            x_adv=np.stack([o.x for o in outcomes]).astype(np.float32),
            trace=[t for o in outcomes for t in o.trace],
        )

    def _run_one(
        self,
        oracle: Oracle,
        goal: Goal,
        one: _One,
        start: FloatArray | None,
        on_call: Callable[[Tracker], None],
    ) -> _Outcome:
        ids, i, x0, target, seed, later = one.ids, one.i, one.x0, one.target, one.seed, one.later
        t0 = time.perf_counter()
        ball = self.config.ball()
        k = oracle.num_classes
        tracker = Tracker(
            oracle=oracle,
            ids=ids,
            x0=x0,
            target=target,
            ball=ball,
            goal=goal,
            render=lambda obs: self._render(obs, k),
            quantize_queries=self.quantize_queries,
            reuse_answers=self.config.reuse_answers,
            by_score=self.fallback_by_score,
            total_reserve=1 + 2 * later,  # this image's final check; later images' two each
            image=i,
            on_call=on_call,
            init_images=[x0],
        )
        returned: FloatArray | None = None
        reason = "finished"
        try:
            with tracker.charging(QueryKind.INIT):
                tracker.ask(x0[None], record=False)
            with seeded(seed):
                returned = self._attack(tracker, x0, seed, start)
        except Stop as stop:
            reason = stop.reason
        if tracker.candidate is not None:
            xq = tracker.candidate
        else:
            base = returned if returned is not None else tracker.best
            base = x0 if base is None else base
            xq = ball.project(np.clip(base, *oracle.bounds)[None], x0[None], bounds=oracle.bounds)[
                0
            ]
        claimed = tracker.candidate is not None
        end = Ending(
            ids=ids,
            x0=x0[None],
            x=xq[None],
            radius=np.array([ball.eps]),
            target=np.array([target], np.int64),
            orig=np.array([tracker.orig], np.int64),
            claimed=np.array([claimed]),
            queries_at_success=np.array([tracker.queries_at_success], np.int64),
            steps=np.array([tracker.calls], np.int64),
            stop_reason=np.array([reason], dtype=object),
            wall_time_s=np.array([time.perf_counter() - t0]),
            seeds=np.array([seed], np.int64),
            first_index=i,
        )
        x_saved, results = finish(oracle, goal, ball, end, total_reserve=2 * later)
        return _Outcome(x_saved[0], results[0], tracker.trace)
