"""``python tests/crash_driver.py attack ...``: the ``bbattack`` command line on a fake
ImageNet-shaped model whose classes follow the mean colour (as in test_hardening), so that a
subprocess attack runs in seconds and can be killed for real.

Environment: ``CRASH_SLOW_S`` sleeps that long per model call (time to land a kill mid-run);
``CRASH_KILL_AT`` makes the process SIGKILL itself once that many queries have been answered
(between two query batches: never in the middle of a paid call); ``CRASH_FAST_RETRIES`` makes a
label API client retry without waiting long (fault injection).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
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


def _kill_after(n: int) -> None:
    hook = cli_watch.Watched.hook

    def counting(self: Any, event: Any) -> None:
        hook(self, event)
        if event.total >= n:
            os.kill(os.getpid(), signal.SIGKILL)

    cli_watch.Watched.hook = counting  # type: ignore[method-assign]


if __name__ == "__main__":
    model = colour_model()
    vars(cli_attack)["load_model"] = lambda name="efficientnet-lite0", backend="auto": model
    if "CRASH_KILL_AT" in os.environ:
        _kill_after(int(os.environ["CRASH_KILL_AT"]))
    if os.environ.get("CRASH_FAST_RETRIES"):
        fast = functools.partial(
            HttpLabelTarget, max_retries=30, backoff_base_s=0.01, backoff_max_s=0.05
        )
        vars(cli_remote)["HttpLabelTarget"] = fast
    sys.exit(main(sys.argv[1:]))
