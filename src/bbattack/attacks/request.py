"""One run of an attack as one object: :class:`RunRequest`, and :class:`Runnable`, the base of
our attacks and the baselines alike, whose ``run``/``resume`` build the request.

The CLI and the bench build a :class:`RunRequest` and call :meth:`Runnable.execute`; the
keyword signature of ``run`` (the Python API) is written once, here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from .goals import Within

if TYPE_CHECKING:
    from ..oracle import Oracle
    from ..results import AttackResult
    from ..surrogates import Surrogate
    from .checkpoint import Checkpointer
    from .registry import AttackInfo

__all__ = ["RunRequest", "Runnable", "StepInfo"]

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class StepInfo:
    """Summary passed to ``on_step`` callbacks (progress bars)."""

    step: int
    active: int
    succeeded: int
    total: int
    queries: IntArray
    target_prob: FloatArray
    target_rank: IntArray
    eps: FloatArray


@dataclass(frozen=True, eq=False)  # eq=False: arrays do not compare to one bool
class RunRequest:
    """What one run (or resume) of an attack is given besides the oracle.

    Args:
        x: a batch of images (N, C, H, W), or one image (C, H, W).
        target: target class per image (or one for all); None for an untargeted attack.
        seed: an int gives image i the seed ``seed + i``; a sequence gives one per image.
            A batch reproduces single-image runs with the same per-image seeds.
        start: PI/LO start images of the target class (N, C, H, W); None searches the
            bundled photos through the oracle (counted queries).
        success: ``top1`` (the target is the top label) or ``topk`` (anywhere in what the
            view reveals); untargeted: the top label is not the clean one.
        on_step: called after every outer iteration.
        surrogates: local models for a surrogate-guided attack: free, never the target
            (see :func:`bbattack.surrogates.resolve_surrogates`).
        checkpoints: write checkpoints between steps (see :mod:`.checkpoint`), so that a
            resume can continue the run after a crash.
        resume: continue from the newest good checkpoint in ``checkpoints`` (from the start
            where there is none) instead of starting afresh.
    """

    x: NDArray[np.floating]
    target: int | Sequence[int] | IntArray | None = None
    seed: int | Sequence[int] = 0
    start: NDArray[np.floating] | None = None
    success: Within = "top1"
    on_step: Callable[[StepInfo], None] | None = None
    surrogates: Sequence[Surrogate] = ()
    checkpoints: Checkpointer | None = None
    resume: bool = False


class Runnable(ABC):
    """What the CLI and the bench call: our attacks and the baselines alike."""

    name: ClassVar[str]
    info: ClassVar[AttackInfo]
    config: Any

    @abstractmethod
    def execute(self, oracle: Oracle, request: RunRequest) -> AttackResult:
        """Run (or, with ``request.resume``, resume) the attack on ``request`` through
        ``oracle``."""

    def run(
        self,
        oracle: Oracle,
        x: NDArray[np.floating],
        target: int | Sequence[int] | IntArray | None = None,
        *,
        seed: int | Sequence[int] = 0,
        start: NDArray[np.floating] | None = None,
        success: Within = "top1",
        on_step: Callable[[StepInfo], None] | None = None,
        surrogates: Sequence[Surrogate] = (),
        checkpoints: Checkpointer | None = None,
    ) -> AttackResult:
        """Attack a batch of images (N, C, H, W) (or one image (C, H, W)) through ``oracle``;
        the arguments are :class:`RunRequest`'s."""
        request = RunRequest(x, target, seed, start, success, on_step, surrogates, checkpoints)
        return self.execute(oracle, request)

    def resume(
        self,
        oracle: Oracle,
        x: NDArray[np.floating],
        target: int | Sequence[int] | IntArray | None = None,
        *,
        seed: int | Sequence[int] = 0,
        start: NDArray[np.floating] | None = None,
        success: Within = "top1",
        on_step: Callable[[StepInfo], None] | None = None,
        surrogates: Sequence[Surrogate] = (),
        checkpoints: Checkpointer,
    ) -> AttackResult:
        """Continue a :meth:`run` from the newest good checkpoint in ``checkpoints`` (from the
        start where there is none). Give the run's arguments and a fresh oracle; with the
        run's journal (``Journal.resume_run``) the queries asked after the checkpoint are
        answered from it, unpaid, and the result equals an unbroken run's, timings aside.
        A checkpoint of another config, inputs, target or attack version is refused."""
        request = RunRequest(
            x, target, seed, start, success, on_step, surrogates, checkpoints, resume=True
        )
        return self.execute(oracle, request)
