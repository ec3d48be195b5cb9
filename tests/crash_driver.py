"""``python tests/crash_driver.py attack ...``: the ``bbattack`` command line on a fake
ImageNet-shaped model whose classes follow the mean colour (as in test_hardening), so that a
subprocess attack runs in seconds and can be killed for real.

Environment: ``CRASH_SLOW_S`` sleeps that long per model call (time to land a kill mid-run);
``CRASH_KILL_AT`` makes the process SIGKILL itself once that many queries have been answered
(between two query batches: never in the middle of a paid call); ``CRASH_KILL_IN=module:name``
(or ``module:name@k``) SIGKILLs it on entering that function (the k-th time; e.g.
``bbattack.cli._rundir:RunRecord.write``: before run.json); ``CRASH_KILL_AFTER=file`` once
``os.replace`` has moved a file of that name into place, outside a staging folder
(``result.json``: the result written, its staging folder and checkpoints not yet removed);
``CRASH_FAST_RETRIES`` makes a label API client retry without waiting long (fault injection).

:func:`start` runs the same in a process forked from a server that imported bbattack once
(multiprocessing's forkserver): a kill costs no interpreter start-up.
"""

from __future__ import annotations

import functools
import importlib
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Mapping
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np
from numpy.typing import NDArray

import bbattack.cli._remote as cli_remote
import bbattack.cli._watch as cli_watch
import bbattack.cli.attack as cli_attack
from bbattack import CallableClassifier, imagenet_classes
from bbattack.cli import main
from bbattack.remote import HttpLabelTarget

GOLDEN, TABBY, ESPRESSO = 207, 281, 967


def colour_logits(x: NDArray[np.float32]) -> NDArray[np.float32]:
    time.sleep(float(os.environ.get("CRASH_SLOW_S", "0")))
    m = x.mean(axis=(2, 3))
    z = np.zeros((len(x), 1000), np.float32)
    z[:, GOLDEN], z[:, TABBY], z[:, ESPRESSO] = 10 * m[:, 0], 10 * m[:, 1], 10 * m[:, 2]
    return z


def colour_model() -> CallableClassifier:
    return CallableClassifier(
        colour_logits, (3, 224, 224), 1000, class_names=imagenet_classes(), name="colour"
    )


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_at(n: int) -> None:
    hook = cli_watch.Watched.hook

    def counting(self: Any, event: Any) -> None:
        hook(self, event)
        if event.total >= n:
            _kill()

    cli_watch.Watched.hook = counting  # type: ignore[method-assign]


def _kill_in(where: str) -> None:
    """SIGKILL on entering ``module:name`` (``name`` may be ``Class.method``), the k-th time
    for ``module:name@k``."""
    where, _, k = where.partition("@")
    module, _, name = where.partition(":")
    owner: Any = importlib.import_module(module)
    *path, attr = name.split(".")
    for part in path:
        owner = getattr(owner, part)
    fn, calls, at = getattr(owner, attr), [0], int(k or 1)

    def killing(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] >= at:
            _kill()
        return fn(*args, **kwargs)

    setattr(owner, attr, killing)


def _kill_after(name: str) -> None:
    """SIGKILL once ``os.replace`` has moved a file called ``name`` into place (not into the
    staging folder where the outputs are made)."""
    replace = os.replace

    def replacing(src: Any, dst: Any, **kwargs: Any) -> None:
        replace(src, dst, **kwargs)
        folder = os.path.basename(os.path.dirname(os.fspath(dst)))
        if os.path.basename(dst) == name and not folder.startswith(".staging-"):
            _kill()

    os.replace = replacing


def drive(argv: list[str], env: Mapping[str, str]) -> int:
    """``bbattack ARGV`` on the colour model, with the kills and faults that ``env`` asks."""
    model = colour_model()
    vars(cli_attack)["load_model"] = lambda name="efficientnet-lite0", backend="auto": model
    if "CRASH_KILL_AT" in env:
        _kill_at(int(env["CRASH_KILL_AT"]))
    if "CRASH_KILL_IN" in env:
        _kill_in(env["CRASH_KILL_IN"])
    if "CRASH_KILL_AFTER" in env:
        _kill_after(env["CRASH_KILL_AFTER"])
    if env.get("CRASH_FAST_RETRIES"):
        fast = functools.partial(
            HttpLabelTarget, max_retries=30, backoff_base_s=0.01, backoff_max_s=0.05
        )
        vars(cli_remote)["HttpLabelTarget"] = fast
    return main(argv)


def _forked(argv: list[str], env: dict[str, str], log: str, cwd: str | None) -> None:
    if cwd is not None:
        os.chdir(cwd)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.update(env)  # colour_logits reads CRASH_SLOW_S
    sys.exit(drive(argv, env))


@functools.cache
def _server() -> multiprocessing.context.ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["crash_driver", "matplotlib.pyplot"])  # what a run imports
    return ctx


def start(argv: list[str], log: str, cwd: str | None = None, **env: str) -> BaseProcess:
    """``bbattack ARGV`` (see :func:`drive`) in a forked process (in ``cwd``), its stdout and
    stderr in the file ``log``; started, not waited for: ``.join()``, then ``.exitcode``
    (-9: SIGKILLed)."""
    proc: BaseProcess = _server().Process(target=_forked, args=(argv, env, log, cwd))
    proc.start()
    return proc


if __name__ == "__main__":
    sys.exit(drive(sys.argv[1:], os.environ))
