"""The remote client's errors, and the option checks that raise UserInputError."""

from __future__ import annotations

import math
from typing import ClassVar

from ..errors import OracleError, TargetUnavailable, UserInputError

__all__ = [
    "QuotaExhausted",
    "RemoteAuthError",
    "RemoteError",
    "RemoteUnavailable",
    "SpendCapExceeded",
    "check_int",
    "check_positive",
]


class RemoteError(TargetUnavailable):
    """The label API refused a call, answered an image with an error, or kept failing. An
    attack that meets one stops with its ``stop_reason`` and keeps its result.

    ``billed_rows``: the images of the failed ``annotate()`` call that were billed all the
    same (positions in its input: the other calls of its batch that were answered, the images
    of a call answered beside one with an error), so that the query journal reports them."""

    stop_reason: ClassVar[str] = "remote_error"
    billed_rows: tuple[int, ...] = ()


class RemoteUnavailable(RemoteError):  # noqa: N818 - a state, like BudgetExhausted
    """The API stayed unreachable or failing (5xx, timeouts, rate limits) through every retry."""

    stop_reason: ClassVar[str] = "remote_unavailable"


class RemoteAuthError(RemoteError, UserInputError):
    """The API key is missing, invalid or not allowed to use the API: the user can fix it."""

    stop_reason: ClassVar[str] = "remote_auth"


class QuotaExhausted(RemoteError):  # noqa: N818 - reads as a state, like BudgetExhausted
    """The key's quota is spent (429 with reason QUOTA_EXCEEDED): retrying will not help."""

    stop_reason: ClassVar[str] = "quota"


class SpendCapExceeded(OracleError):  # noqa: N818 - a state, like BudgetExhausted
    """A call would pass ``max_queries`` or ``max_cost``; nothing was sent."""


def check_int(name: str, v: int, lo: int, hi: int | None) -> None:
    """UserInputError unless ``v`` is an int (not a bool) in [lo, hi] (hi None: no bound)."""
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise UserInputError(f"{name} must be an integer {bound}, got {v!r}")


def check_positive(name: str, v: float) -> None:
    """UserInputError unless ``v`` is a finite number > 0."""
    if not (v > 0 and math.isfinite(v)):
        raise UserInputError(f"{name} must be a positive number, got {v}")
