"""The retry policy: what is worth another attempt, Retry-After, and capped full-jitter backoff."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from ..errors import UserInputError
from .errors import RemoteUnavailable, check_int, check_positive

__all__ = [
    "GarbledError",
    "RetryPolicy",
    "RetryableError",
    "is_retryable_status",
    "retry_after",
]

T = TypeVar("T")


class GarbledError(Exception):
    """A 200 answer whose body is not JSON of the expected shape (for one: truncated)."""


class RetryableError(Exception):
    """One failed attempt that is worth another: what happened and what the server asked."""

    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.retry_after = retry_after


def is_retryable_status(status: int, reason: str | None) -> bool:
    """A rate limit (429, unless the quota is spent: reason QUOTA_EXCEEDED) or a 5xx."""
    return (status == 429 and reason != "QUOTA_EXCEEDED") or status >= 500


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds: a number, or an HTTP date; None if absent or unreadable."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


@dataclass(frozen=True)
class RetryPolicy:
    """Up to ``max_retries`` more attempts after a :class:`RetryableError`, sleeping
    ``min(backoff_max_s, backoff_base_s * 2**attempt) * U[0, 1]`` (full jitter) or the
    server's Retry-After if that is longer."""

    max_retries: int = 8
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0

    def __post_init__(self) -> None:
        check_int("max_retries", self.max_retries, 0, 1000)
        check_positive("backoff_max_s", self.backoff_max_s)
        if not (self.backoff_base_s >= 0 and math.isfinite(self.backoff_base_s)):
            raise UserInputError(f"backoff_base_s must be >= 0, got {self.backoff_base_s}")

    def delay(self, attempt: int, retry_after: float | None, u: float) -> float:
        """The wait after failed attempt ``attempt`` (0-based), ``u`` uniform in [0, 1):
        full jitter under the cap, never shorter than the server's Retry-After."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** min(attempt, 64))
        delay = ceiling * u
        return delay if retry_after is None else max(delay, retry_after)

    def run(
        self,
        attempt: Callable[[], T],
        *,
        what: str,
        jitter: Callable[[], float],
        sleep: Callable[[float], None],
        on_retry: Callable[[int, float, str], None],
    ) -> T:
        """``attempt()`` until it returns, raises something other than RetryableError, or
        has failed ``max_retries + 1`` times (then RemoteUnavailable naming ``what`` and the last
        failure). Before each retry: ``on_retry(retry_number, delay, last_failure)`` (retry
        numbers from 1), then ``sleep(delay)``."""
        last = "no attempt"
        for n in range(self.max_retries + 1):
            try:
                return attempt()
            except RetryableError as e:
                last = str(e)
                if n == self.max_retries:
                    break
                delay = self.delay(n, e.retry_after, jitter())
                on_retry(n + 1, delay, last)
                sleep(delay)
        raise RemoteUnavailable(
            f"{what} kept failing: gave up after {self.max_retries} retries; last: {last}"
        )
