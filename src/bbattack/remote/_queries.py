"""The queries of one ``annotate`` call: its images checked, the ones still to send (each
image once, where the journal has no answer), and the error that a failed batch raises."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import UserInputError

__all__ = ["Query", "checked_images", "first_error", "to_send"]

FloatArray = NDArray[np.float32]


@dataclass(frozen=True)
class Query:
    key: str
    index: int  # first position of this image in the annotate() call, for error messages
    png: bytes


def to_send(keys: list[str], pngs: list[bytes], answers: Mapping[str, Any]) -> dict[str, Query]:
    """The images to send, by cache key: those without an answer, each once (at its first
    position)."""
    todo: dict[str, Query] = {}
    for i, (k, p) in enumerate(zip(keys, pngs, strict=True)):
        if k not in answers and k not in todo:
            todo[k] = Query(k, i, p)
    return todo


def checked_images(x: FloatArray) -> FloatArray:
    """``x`` if it is a batch of images in [0, 1]; UserInputError otherwise."""
    arr = np.asarray(x)
    if arr.ndim != 4 or arr.shape[1] not in (1, 3) or min(arr.shape[2:], default=0) < 1:
        raise UserInputError(f"images must be (N, C, H, W) with C 1 or 3, got {arr.shape}")
    if len(arr) and not np.issubdtype(arr.dtype, np.floating):
        raise UserInputError(f"images must be floats in [0, 1], got dtype {arr.dtype}")
    if len(arr) and (not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0):
        raise UserInputError("images must be finite and within [0, 1]")
    return arr


def first_error(futures: list[Future[Any]]) -> BaseException:
    """The error of the earliest failed batch (in batch order, so messages are stable)."""
    for f in futures:
        if not f.cancelled():
            e = f.exception()
            if e is not None:
                return e
    raise AssertionError("no batch failed")  # pragma: no cover - only called after a failure
