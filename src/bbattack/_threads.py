"""One torch thread for the computations that decide what an attack asks next.

A float sum taken over two threads is added in another order than over one, so a surrogate's
gradient (and a torch model's scores) differed in the last bits between ``OMP_NUM_THREADS=1``
and ``=2``; through a sign or a comparison that changed the queries, the result and whether a
killed run could resume under another thread count. Pinned to one thread, these computations
give the same bits whatever the machine's thread setting. (One thread is also what a bench
worker runs under load; across CPUs with other vector units, bits can still differ.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ["one_torch_thread"]

P = ParamSpec("P")
R = TypeVar("R")


def one_torch_thread(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` with torch's intra-op pool set to one thread, restored afterwards."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        import torch

        n = torch.get_num_threads()
        if n == 1:
            return fn(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(n)

    return wrapper
