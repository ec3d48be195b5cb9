"""Other libraries' attacks as baselines, run under the query-accounting oracle.

A baseline hands a library (torchattacks, the Adversarial Robustness Toolbox) a model that is
really the :class:`~bbattack.oracle.Oracle`: every model call the library makes is a counted,
budgeted query, and the library sees only what the oracle's view reveals (log-probabilities
under ``Scores``; a one-hot of the top-1 label for the label-only attacks).

The wrapper, not the library, decides success, exactly as our own attacks do:

* before every call it checks :meth:`Oracle.affordable`, keeping one query back for the final
  verification; when the budget cannot pay, a private exception unwinds out of the library;
* the first queried image that shows the target as top-1 *inside the ε box*, once rounded to
  8 bits, is the result: the library is stopped there and ``queries_at_success`` is the count at
  that point (a library that keeps going, such as HopSkipJump minimising its distance, is not
  charged for what it would have done next);
* the saved image is quantised (8-bit, inside the box) and verified by one counted ``FINAL``
  query. With no success, the library's own output (or, when it was stopped, the best image it
  had queried) is projected into the box and verified the same way.

A result reads like our attacks' results: ``steps`` counts the library's model calls and the
trace has one row per call (the target's best score and rank in that call, where the view
shows them; no loss, lr 0). Queries are charged by kind: the clean and start images as INIT,
searches and proposals as LINE_SEARCH, HopSkipJump's gradient samples as GRADIENT.

The libraries are imported lazily: ``import bbattack.baselines`` works without them, and a
missing one is a :class:`~bbattack.errors.BackendUnavailableError` naming the install command.
Images are attacked one at a time (the benchmark runs one image per case anyway).
"""

from __future__ import annotations

import hashlib
import importlib
import random
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .attacks.base import StepInfo, check_budget, require, run_inputs, with_overrides
from .errors import BackendUnavailableError, StartImageError, UserInputError
from .images import bundled_photos, load_image, quantize
from .oracle import LabelsObservation, Observation, Oracle, QueryKind, Scores, View
from .results import AttackResult, ClassRef, ImageResult, StepRecord, TopKEntry

__all__ = [
    "BASELINES",
    "ArtHopSkipJump",
    "ArtHopSkipJumpConfig",
    "ArtSquare",
    "ArtSquareConfig",
    "Baseline",
    "BaselineConfig",
    "TorchattacksSquare",
    "TorchattacksSquareConfig",
]

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]

INSTALL_HINT = "pip install 'bbattack[baselines]' and pip install --no-deps torchattacks"
_MEMO_SIZE = 4096  # answers kept per image for byte-identical repeats (reuse_answers)
_UNBOUNDED_ITERS = 10**9  # "until the budget runs out": the oracle's budget is the real cap
_TOL = 1e-6  # the ε tolerance of the success test, as in Attack._finish


def _backend(module: str, package: str) -> Any:
    """Import an optional library, or raise BackendUnavailableError with the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise BackendUnavailableError(
            f"this baseline needs {package}, which is not installed ({e}); install it with: "
            f"{INSTALL_HINT}"
        ) from None


# ---------------------------------------------------------------- configs


class BaselineConfig(BaseModel):
    """Settings shared by every baseline. Frozen and validated; data goes to ``run``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    eps: float = Field(0.05, gt=0.0, le=1.0, description="L∞ radius in [0, 1] pixel units")
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


class _SquareConfig(BaselineConfig):
    loss: Literal["ce", "margin"] = Field(
        "ce", description="targeted loss on log-probabilities: cross-entropy or margin"
    )
    p_init: float = Field(
        0.05, gt=0.0, le=1.0, description="initial fraction of pixels in a square update"
    )


class TorchattacksSquareConfig(_SquareConfig):
    """Square in torchattacks. ``max_iter`` is torchattacks' ``n_queries`` (per restart)."""

    n_restarts: int = Field(1, ge=1, description="random restarts (torchattacks n_restarts)")
    rescale_schedule: bool = Field(
        True, description="stretch the p schedule over max_iter (torchattacks resc_schedule)"
    )


class ArtSquareConfig(_SquareConfig):
    """Square in ART. ``reuse_answers`` is on: ART asks for the current iterate's label and then
    its loss in every iteration, so without it an iteration costs three queries, not one."""

    reuse_answers: bool = True
    nb_restarts: int = Field(1, ge=1, description="random restarts (ART nb_restarts)")


class ArtHopSkipJumpConfig(BaselineConfig):
    """HopSkipJump in ART; defaults are ART's and the paper's (B₀ = 100, at most 10⁴)."""

    init_eval: int = Field(
        100, ge=1, description="gradient-estimate queries in the first iteration (B₀)"
    )
    max_eval: int = Field(
        10_000, ge=1, description="cap on gradient-estimate queries per iteration"
    )
    batch_size: int = Field(64, ge=1, description="images per model call")

    @model_validator(mode="after")
    def _evals(self) -> ArtHopSkipJumpConfig:
        if self.init_eval > self.max_eval:
            raise ValueError("init_eval must be <= max_eval")
        return self


C = TypeVar("C", bound=BaselineConfig)


# ---------------------------------------------------------------- the oracle as the library sees it


class _Stop(Exception):  # noqa: N818 - a control-flow signal, like StopIteration
    """Unwinds out of a library: ``success`` (we have our image) or ``budget``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Tracker:
    """One image's window onto the oracle: charges, budgets and watches every library call."""

    oracle: Oracle
    ids: IntArray  # (1,): the oracle id of this image
    x0: FloatArray  # (C, H, W)
    target: int
    eps: float
    render: Callable[[Observation], FloatArray]  # observation -> what the library gets (B, K)
    quantize_queries: bool  # round every query onto the 8-bit grid inside the ε box
    reuse_answers: bool
    by_score: bool  # fallback image: best target score in the box (else: nearest target hit)
    total_reserve: int  # queries the shared total keeps back (this image's and later images')
    image: int
    on_call: Callable[[_Tracker], None]
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

        Raises _Stop("budget") before a call the budget cannot pay (nothing is charged) and
        _Stop("success") after the call that produced the result.
        """
        xb = np.asarray(x, dtype=np.float32).reshape(-1, *self.x0.shape)
        qb = np.clip(xb, *self.oracle.bounds).astype(np.float32)
        if self.quantize_queries:
            qb = quantize(qb, np.broadcast_to(self.x0, qb.shape), np.full(len(qb), self.eps))
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
            raise _Stop("budget")
        obs = self.oracle.query(
            q, np.repeat(self.ids, len(q)), QueryKind.INIT if is_init else self.kind
        )
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
                    eps=self.eps,
                    lr=0.0,
                )
            )
            self.on_call(self)
        if hit:
            raise _Stop("success")
        return out

    def _watch(self, q: FloatArray, obs: Observation) -> bool:
        """Track the target's score/rank and the fallback image; return whether we succeeded."""
        t = np.full(len(q), self.target, dtype=np.int64)
        top1 = obs.top1()
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
        linf = np.abs(q.astype(np.float64) - self.x0).reshape(len(q), -1).max(axis=1)
        inside = linf <= self.eps + _TOL
        if self.by_score:
            key = np.where(inside & finite, score, -np.inf)
        else:
            key = np.where(top1 == self.target, -linf, -np.inf)
        j = int(np.argmax(key))
        if key[j] > self.best_key:
            self.best_key = float(key[j])
            self.best = q[j].copy()
        hits = np.flatnonzero((top1 == self.target) & inside)
        if not len(hits):
            return False
        # What counts is the image we would save: the hit rounded to 8 bits inside the box.
        j = int(hits[0])
        cand = quantize(q[j : j + 1], self.x0[None], np.array([self.eps]))
        if not np.array_equal(cand, q[j : j + 1]):
            if not self.can_pay(1):
                return False
            check = self.oracle.query(cand, self.ids, QueryKind.SUCCESS_CHECK)
            if int(check.top1()[0]) != self.target:
                return False
        self.candidate = cand[0]
        self.queries_at_success = int(self.oracle.queries(self.ids)[0])
        return True


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
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


def _log_probs(obs: Observation) -> FloatArray:
    """Log-probabilities: logits whose softmax is the model's probability vector."""
    probs = getattr(obs, "probs", None)
    if probs is None:  # check_view keeps this from happening
        raise UserInputError("this baseline needs the full scores view")
    out: FloatArray = np.log(np.maximum(np.asarray(probs, np.float64), 1e-38)).astype(np.float32)
    return out


def _one_hot(obs: Observation, k: int) -> FloatArray:
    top = obs.top1()
    out = np.zeros((len(top), k), dtype=np.float32)
    out[np.arange(len(top)), top] = 1.0
    return out


# ---------------------------------------------------------------- the base class


class _Progress:
    """What ``on_step`` callbacks see across the images of a run."""

    def __init__(self, n: int) -> None:
        self.step = 0
        self.succeeded = 0
        self.prob = np.full(n, np.nan, np.float32)
        self.rank = np.full(n, -1, np.int64)


@dataclass
class _Outcome:
    x: FloatArray  # the saved 8-bit image
    result: ImageResult
    trace: list[StepRecord]


class Baseline(ABC, Generic[C]):
    """A library's attack behind the oracle. Called exactly like :class:`~bbattack.Attack`.

    Subclasses set ``name``, ``config_class``, ``needs_start``, ``views`` and implement
    ``check_view``, ``_require`` and ``_attack``. Targeted only.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[BaselineConfig]]
    needs_start: ClassVar[bool] = False
    views: ClassVar[str]  # what the view must reveal, in words
    natural_threat: ClassVar[str]  # the benchmark threat (ql, pi, lo) it is built for
    supports_untargeted: ClassVar[bool] = False
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
    def check_view(self, view: View) -> None:
        """Raise ThreatModelError if the view does not reveal what the library needs."""

    @abstractmethod
    def _require(self) -> Any:
        """Import the library (BackendUnavailableError if it is missing) and return it."""

    @abstractmethod
    def _render(self, obs: Observation, k: int) -> FloatArray:
        """Turn an observation into what the library's model returns (B, K)."""

    @abstractmethod
    def _attack(
        self, tracker: _Tracker, x0: FloatArray, seed: int, start: FloatArray | None
    ) -> FloatArray | None:
        """Run the library on one image through ``tracker``; return its output (C, H, W)."""

    def _iterations(self, tracker: _Tracker, overhead: int, restarts: int = 1) -> int:
        """``max_iter``, or the queries this image can still spend (less the final check and
        the library's ``overhead`` of its own checks) split over ``restarts``: one query per
        iteration, so that the library's schedule stretches over the budget."""
        if self.config.max_iter is not None:
            return self.config.max_iter
        left = int(tracker.oracle.remaining(tracker.ids)[0])
        left = min(left, tracker.oracle.total_remaining() - tracker.total_reserve + 1)
        return max(1, min((left - 1 - overhead) // restarts, _UNBOUNDED_ITERS))

    # -- the run

    def run(
        self,
        oracle: Oracle,
        x: NDArray[np.floating],
        target: int | Sequence[int] | IntArray | None = None,
        *,
        seed: int | Sequence[int] = 0,
        start: NDArray[np.floating] | None = None,
        on_step: Callable[[StepInfo], None] | None = None,
    ) -> AttackResult:
        """Attack images (N, C, H, W) (or one image (C, H, W)) through ``oracle``.

        Same arguments and result as :meth:`bbattack.Attack.run`; ``target`` is required.
        Images are attacked one after another; image i gets the seed ``seed + i`` (or
        ``seed[i]``). Raises StartImageError where a start image is needed and none works.
        """
        self.check_view(oracle.view)
        self._require()
        xb, tgt, seeds = run_inputs(oracle, x, target, seed, self.name, untargeted_ok=False)
        n = len(xb)
        # One reserved query per image: the final verification.
        check_budget(oracle, n, 1, self.config.max_iter is not None, "the baseline max_iter")
        st = None if start is None else np.asarray(start, dtype=np.float32).reshape(xb.shape)

        ids = oracle.register(n)
        progress = _Progress(n)

        def on_call(tr: _Tracker) -> None:
            progress.step += 1
            progress.prob[tr.image] = tr.target_prob
            progress.rank[tr.image] = tr.target_rank
            if on_step is not None:
                on_step(
                    StepInfo(
                        progress.step,
                        n - tr.image,
                        progress.succeeded,
                        n,
                        oracle.queries(ids),
                        progress.prob.copy(),
                        progress.rank.copy(),
                        np.full(n, self.config.eps, np.float32),
                    )
                )

        outcomes: list[_Outcome] = []
        for i in range(n):
            later = n - i - 1
            out = self._run_one(
                oracle,
                ids[i : i + 1],
                i,
                xb[i],
                int(tgt[i]),
                int(seeds[i]),
                None if st is None else st[i],
                later,
                on_call,
            )
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
        ids: IntArray,
        i: int,
        x0: FloatArray,
        target: int,
        seed: int,
        start: FloatArray | None,
        later: int,
        on_call: Callable[[_Tracker], None],
    ) -> _Outcome:
        t0 = time.perf_counter()
        eps = self.config.eps
        k = oracle.num_classes
        tracker = _Tracker(
            oracle=oracle,
            ids=ids,
            x0=x0,
            target=target,
            eps=eps,
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
            with _seeded(seed):
                returned = self._attack(tracker, x0, seed, start)
        except _Stop as stop:
            reason = stop.reason
        if tracker.candidate is not None:
            xq = tracker.candidate
        else:
            base = returned if returned is not None else tracker.best
            base = x0 if base is None else base
            xq = quantize(np.clip(base, *oracle.bounds)[None], x0[None], np.array([eps]))[0]

        obs: Observation | None = None
        if oracle.affordable(ids, 1, total_reserve=2 * later)[0]:
            obs = oracle.query(xq[None], ids, QueryKind.FINAL)
        dq = (xq.astype(np.float64) - x0.astype(np.float64)).reshape(-1)
        linf = float(np.abs(dq).max())
        l2 = float(np.sqrt((dq**2).sum()))
        ok = obs is not None and int(obs.top1()[0]) == target and linf <= eps + _TOL
        names = oracle.class_names

        def ref(c: int) -> ClassRef | None:
            return None if c < 0 else ClassRef(id=c, name=names.name(c) if names else None)

        n_shown = 5 if isinstance(oracle.view, Scores) else 20
        topk = (
            []
            if obs is None
            else [
                TopKEntry(id=c, name=names.name(c) if names else None, score=s)
                for c, s in obs.topk(0, n_shown)
            ]
        )
        q_all = int(oracle.queries(ids)[0])
        qs: int | None = None
        if ok:
            qs = tracker.queries_at_success if tracker.candidate is not None else q_all
        if tracker.candidate is not None and not ok:
            reason = "lost_in_quantisation"
        result = ImageResult(
            index=i,
            success=bool(ok),
            queries=q_all,
            queries_at_success=qs,
            queries_by_kind=oracle.queries_by_kind(int(ids[0])),
            linf=linf,
            l2=l2,
            eps=eps,
            original=ref(tracker.orig),
            target=ref(target),
            final_topk=topk,
            steps=tracker.calls,
            stop_reason=reason,
            wall_time_s=time.perf_counter() - t0,
            seed=seed,
        )
        return _Outcome(xq.astype(np.float32), result, tracker.trace)


# ---------------------------------------------------------------- Square Attack


class _TorchOracle(torch.nn.Module):
    """A torch model whose forward pass is an oracle query; returns log-probabilities."""

    def __init__(self, tracker: _Tracker) -> None:
        super().__init__()
        self.tracker = tracker
        # torchattacks finds the device from the model's first parameter.
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.tracker.ask(x.detach().cpu().numpy())
        return torch.from_numpy(out).to(x.device)


class _SquareBaseline(Baseline[C]):
    """What both Square wrappers share: full scores as log-probabilities, queries rounded onto
    the 8-bit grid inside the box."""

    views = "full scores (Scores)"
    natural_threat = "ql"
    quantize_queries = True

    def check_view(self, view: View) -> None:
        require(isinstance(view, Scores), "Square needs the full scores view (ql)")

    def _render(self, obs: Observation, k: int) -> FloatArray:
        return _log_probs(obs)


class TorchattacksSquare(_SquareBaseline[TorchattacksSquareConfig]):
    """Square Attack (L∞, targeted) from torchattacks 3.5.1, run through the oracle.

    Paper: Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient black-box
    adversarial attack via random search", ECCV 2020 (arXiv:1912.00049).
    Threat model: the full probability vector (``Scores``); the library's "logits" are the
    log-probabilities, so its softmax is the model's output. Norm: L∞, radius ``eps``.
    Random search: each iteration changes one random square of the image to ±ε (one sign per
    channel) and keeps it if the loss (cross-entropy ``ce`` or ``margin`` towards the target)
    drops. Every query is rounded onto the 8-bit grid inside the ε box before it is asked, so
    an image that reaches the target is one we can save.
    Query cost per step: 1. Also: 1 clean query of ours and, in the library, 1 clean check,
    1 stripe initialisation and 1 final check per restart; 1 final 8-bit verification.
    Defaults: loss ``ce``, i.e. −log p(target), the loss QL descends, so a comparison with QL
    is one of search strategies, not losses (``margin`` is the alternative). ``p_init`` 0.05:
    the paper's value for L∞ on ImageNet; torchattacks' default 0.8 is the authors' setting for
    adversarially trained MNIST, and the authors advise a p below the untargeted one for
    targeted runs of 10⁵ queries. With our budgets (~10⁴) and the schedule stretched over them
    (``max_iter`` None: p halves after 0.1%, 0.5%, 2%, 5%, ... of the budget) 0.05 already
    ends below 10⁻⁴; one restart, seeded with the case seed.
    """

    name = "ta-square"
    config_class = TorchattacksSquareConfig

    def _require(self) -> Any:
        return _backend("torchattacks", "torchattacks")

    def _attack(
        self, tracker: _Tracker, x0: FloatArray, seed: int, start: FloatArray | None
    ) -> FloatArray | None:
        ta = self._require()
        cfg = self.config
        atk = ta.Square(
            _TorchOracle(tracker),
            norm="Linf",
            eps=cfg.eps,
            n_queries=self._iterations(tracker, 1 + 2 * cfg.n_restarts, cfg.n_restarts),
            n_restarts=cfg.n_restarts,
            p_init=cfg.p_init,
            loss=cfg.loss,
            resc_schedule=cfg.rescale_schedule,
            seed=seed,
            verbose=False,
        )
        atk.set_mode_targeted_by_label(quiet=True)
        adv = atk(torch.from_numpy(x0[None].copy()), torch.tensor([tracker.target]))
        out: FloatArray = adv.detach().cpu().numpy()[0].astype(np.float32)
        return out


class ArtSquare(_SquareBaseline[ArtSquareConfig]):
    """Square Attack (L∞, targeted) from the Adversarial Robustness Toolbox 1.20.1.

    Paper: Andriushchenko, Croce, Flammarion, Hein, ECCV 2020 (arXiv:1912.00049).
    Threat model: full scores (``Scores``), through an ART ``BlackBoxClassifierNeuralNetwork``
    whose predictions are the oracle's log-probabilities (ART's Square requires a neural-network
    estimator but never asks it for gradients). ART's Square is untargeted; it is made targeted
    with its ``adv_criterion`` (top-1 is the target) and ``loss`` hooks (``ce``: −log p(target),
    ``margin``: max other log p − log p(target)). Norm: L∞, radius ``eps``. Queries are rounded
    onto the 8-bit grid inside the box, as in ``ta-square``.
    Query cost per step: 1 with ``reuse_answers`` (the default: ART re-asks the current iterate
    for its label and its loss every iteration, byte-identical repeats that are answered from
    memory); 3 without. Also: 1 clean query, 1 stripe initialisation, 1 final verification.
    Defaults as ``ta-square``: loss ``ce``, ``p_init`` 0.05, schedule over the budget.
    """

    name = "art-square"
    config_class = ArtSquareConfig

    def _require(self) -> Any:
        _backend("scipy", "scipy")
        return _backend("art.attacks.evasion", "adversarial-robustness-toolbox")

    def _attack(
        self, tracker: _Tracker, x0: FloatArray, seed: int, start: FloatArray | None
    ) -> FloatArray | None:
        evasion = self._require()
        est_mod = _backend("art.estimators.classification", "adversarial-robustness-toolbox")
        cfg = self.config
        oracle = tracker.oracle
        est = est_mod.BlackBoxClassifierNeuralNetwork(
            tracker.ask,
            oracle.input_shape,
            oracle.num_classes,
            channels_first=True,
            clip_values=oracle.bounds,
        )

        def loss(x: NDArray[np.floating], y: NDArray[np.floating]) -> NDArray[np.float64]:
            lp = np.asarray(est.predict(x), dtype=np.float64)
            rows = np.arange(len(lp))
            t = np.asarray(y).argmax(axis=1)
            lt: NDArray[np.float64] = lp[rows, t]
            if cfg.loss == "ce":
                return -lt
            other = lp.copy()
            other[rows, t] = -np.inf
            out: NDArray[np.float64] = other.max(axis=1) - lt
            return out

        def adv_criterion(y_pred: NDArray[np.floating], y: NDArray[np.floating]) -> Any:
            return np.asarray(y_pred).argmax(axis=1) == np.asarray(y).argmax(axis=1)

        atk = evasion.SquareAttack(
            est,
            norm=np.inf,
            adv_criterion=adv_criterion,
            loss=loss,
            max_iter=self._iterations(tracker, 2 * cfg.nb_restarts, cfg.nb_restarts),
            eps=cfg.eps,
            p_init=cfg.p_init,
            nb_restarts=cfg.nb_restarts,
            verbose=False,
        )
        adv = atk.generate(x0[None].copy(), y=np.array([tracker.target]))
        out: FloatArray = np.asarray(adv, dtype=np.float32)[0]
        return out


# ---------------------------------------------------------------- HopSkipJump


def _start_candidates(shape: tuple[int, int, int]) -> FloatArray:
    """The bundled photos at the model's input shape (grey for 1-channel models)."""
    photos = bundled_photos()
    if not photos:
        raise StartImageError("no bundled photos are installed; give a start image")
    if shape[0] not in (1, 3):
        raise StartImageError(
            f"bundled photos are RGB; a {shape[0]}-channel model needs a start image"
        )
    cands = np.stack([load_image(p, size=(shape[1], shape[2])) for p in photos.values()])
    if shape[0] == 1:
        grey = (cands * np.array([0.299, 0.587, 0.114], np.float32)[:, None, None]).sum(1)
        cands = (np.rint(grey * 255.0) / 255.0).astype(np.float32)[:, None]
    return cands


class ArtHopSkipJump(Baseline[ArtHopSkipJumpConfig]):
    """HopSkipJump (L∞, targeted, decision-based) from the Adversarial Robustness Toolbox 1.20.1.

    Paper: Chen, Jordan, Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based
    Attack", IEEE S&P 2020 (arXiv:1904.02144).
    Threat model: the top-1 label only; runs under any view (``Label``, ``Labels(k)``,
    ``TopK(k)``, ``Scores``) and uses nothing but the top-1 label (the ART
    ``BlackBoxClassifier`` returns its one-hot). Norm: L∞ (``norm=np.inf``).
    HopSkipJump starts from an image of the target class and walks along the decision boundary
    towards the source image, shrinking the distance; only an image inside the ε box counts,
    so the run stops at the first in-box image the model labels as the target (checked once
    more as the 8-bit image we save, where it is not on the grid already).
    Start image: ``start`` (its top-1 must be the target; else StartImageError), or, with none,
    the first bundled photo whose top-1 is the target (counted INIT queries).
    Query cost per step t (from 1): ``min(init_eval·√t, max_eval)`` gradient-estimate queries,
    a binary search (~log₂(1/θ) queries, θ = 0.01/d) and a geometric step-size search (≥ 1).
    Also: 1 clean query of ours, the start check, the library's clean and start predictions,
    1 final verification. ``max_iter`` None: iterate until the budget is spent.
    """

    name = "art-hsj"
    config_class = ArtHopSkipJumpConfig
    needs_start = True
    views = "the top-1 label (any view)"
    natural_threat = "lo"
    fallback_by_score = False

    def check_view(self, view: View) -> None:
        """Every view reveals the top-1 label, which is all HopSkipJump uses."""

    def _require(self) -> Any:
        _backend("scipy", "scipy")
        return _backend("art.attacks.evasion", "adversarial-robustness-toolbox")

    def _render(self, obs: Observation, k: int) -> FloatArray:
        return _one_hot(obs, k)

    def _start(self, tracker: _Tracker, start: FloatArray | None) -> FloatArray:
        oracle = tracker.oracle
        if start is not None:
            st = np.clip(start, *oracle.bounds).astype(np.float32)
            tracker.init_images.append(st)
            with tracker.charging(QueryKind.INIT):
                got = tracker.ask(st[None], record=False)
            if int(got[0].argmax()) != tracker.target:
                raise StartImageError(
                    f"the start image is not labelled as the target class {tracker.target} "
                    f"(image {tracker.image}); give a start image the model labels as the target"
                )
            return st
        cands = _start_candidates(oracle.input_shape)
        if not tracker.can_pay(len(cands)):
            raise StartImageError(
                f"searching {len(cands)} bundled photos for a start image needs {len(cands)} "
                "queries; raise the budget or give a start image"
            )
        with tracker.charging(QueryKind.INIT):
            got = tracker.ask(cands, record=False)
        found = np.flatnonzero(got.argmax(axis=1) == tracker.target)
        if not len(found):
            raise StartImageError(
                f"no bundled photo is labelled as the target class {tracker.target}; "
                "give a start image of that class"
            )
        photo: FloatArray = cands[int(found[0])]
        tracker.init_images.append(photo)
        return photo

    def _attack(
        self, tracker: _Tracker, x0: FloatArray, seed: int, start: FloatArray | None
    ) -> FloatArray | None:
        evasion = self._require()
        est_mod = _backend("art.estimators.classification", "adversarial-robustness-toolbox")
        cfg = self.config
        oracle = tracker.oracle
        st = self._start(tracker, start)

        class _HSJ(evasion.HopSkipJump):  # type: ignore[misc, name-defined]
            """Charges the gradient-estimate samples as GRADIENT, the searches as LINE_SEARCH."""

            def _compute_update(self, *args: Any, **kwargs: Any) -> Any:
                with tracker.charging(QueryKind.GRADIENT):
                    return super()._compute_update(*args, **kwargs)

        est = est_mod.BlackBoxClassifier(
            tracker.ask, oracle.input_shape, oracle.num_classes, clip_values=oracle.bounds
        )
        atk = _HSJ(
            est,
            batch_size=cfg.batch_size,
            targeted=True,
            norm=np.inf,
            max_iter=cfg.max_iter if cfg.max_iter is not None else _UNBOUNDED_ITERS,
            max_eval=cfg.max_eval,
            init_eval=cfg.init_eval,
            verbose=False,
        )
        adv = atk.generate(
            x0[None].copy(), y=np.array([tracker.target]), x_adv_init=st[None].copy()
        )
        out: FloatArray = np.asarray(adv, dtype=np.float32)[0]
        return out


BASELINES: dict[str, type[Baseline[Any]]] = {
    "ta-square": TorchattacksSquare,
    "art-square": ArtSquare,
    "art-hsj": ArtHopSkipJump,
}
