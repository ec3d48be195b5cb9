"""Where a bench's tasks run: in this process, in local worker processes, or as Ray tasks.
Each executor calls ``run`` (module-level, so that workers import it by name) on every task
and yields the outcomes as they finish."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..errors import BackendUnavailableError, UserInputError

__all__ = ["processes", "ray_executor", "serial"]

T = TypeVar("T")
R = TypeVar("R")


def serial(run: Callable[[T], list[R]], tasks: list[T], workers: int) -> Iterator[R]:
    for t in tasks:
        yield from run(t)


def _init_worker(threads: int, parent: int) -> None:
    _die_with(parent)
    os.environ["BBATTACK_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _die_with(parent: int) -> None:
    """Linux: the worker gets SIGTERM when the bench process dies, even by SIGKILL, so a
    killed bench leaves no worker running on (and paying for) its task."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # it died before the call: nobody would send the signal
        os._exit(1)


def processes(run: Callable[[T], list[R]], tasks: list[T], workers: int) -> Iterator[R]:
    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn: torch and ONNX Runtime thread pools do not survive fork.
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(threads, os.getpid())
    ) as pool:
        futures = [pool.submit(run, t) for t in tasks]
        try:
            for f in cf.as_completed(futures):
                yield from f.result()
        finally:
            for f in futures:
                f.cancel()


def ray_executor(
    address: str,
) -> Callable[[Callable[[T], list[R]], list[T], int], Iterator[R]]:
    def execute(run: Callable[[T], list[R]], tasks: list[T], workers: int) -> Iterator[R]:
        try:
            import ray
        except ImportError:
            raise BackendUnavailableError("--ray needs Ray: pip install 'bbattack[ray]'") from None
        started = not ray.is_initialized()
        if started:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address == "local":
                # "local" starts a new cluster even where RAY_ADDRESS or `ray start` left one.
                kwargs["num_cpus"] = workers if workers > 1 else os.cpu_count()
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise UserInputError(f"--ray {address}: cannot connect ({e})") from None
        remote = ray.remote(num_cpus=1)(run)
        pending = [remote.remote(t) for t in tasks]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    yield from ray.get(ref)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()

    return execute
