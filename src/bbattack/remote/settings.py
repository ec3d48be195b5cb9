"""The settings an :class:`~bbattack.remote.HttpLabelTarget` exposes from its retry policy and
spend cap, and what its paid queries cost."""

from __future__ import annotations

import threading

from .retry import RetryPolicy
from .spend import SpendCap

__all__ = ["Settings"]


class Settings:
    """The policies' settings, and money (a base of HttpLabelTarget, which sets the fields)."""

    retry_policy: RetryPolicy
    spend_cap: SpendCap
    paid_queries: int
    _reserved: int
    _lock: threading.Lock

    @property
    def max_retries(self) -> int:
        return self.retry_policy.max_retries

    @property
    def backoff_base_s(self) -> float:
        return self.retry_policy.backoff_base_s

    @property
    def backoff_max_s(self) -> float:
        return self.retry_policy.backoff_max_s

    @property
    def max_queries(self) -> int | None:
        return self.spend_cap.max_queries

    @property
    def max_cost(self) -> float | None:
        return self.spend_cap.max_cost

    @property
    def price_per_1000(self) -> float | None:
        """USD per 1,000 paid images (None: the API is not priced per image)."""
        return self.spend_cap.price_per_1000

    @property
    def cost(self) -> float:
        """Dollars spent by this client: ``paid_queries * price_per_1000 / 1000``."""
        return self.spend_cap.cost(self.paid_queries)

    def estimate_cost(self, n_queries: int) -> float:
        """Dollars that ``n_queries`` paid images cost at ``price_per_1000``."""
        return self.spend_cap.cost(n_queries)

    @property
    def remaining_queries(self) -> int | None:
        """Paid images the caps still allow (None: no cap)."""
        return self.spend_cap.remaining(self.paid_queries)

    def describe_plan(self, n_queries: int) -> str:
        """A dry run: what ``n_queries`` more paid images would cost, and whether the caps
        allow them. Nothing is sent."""
        return self.spend_cap.describe_plan(self.paid_queries, n_queries)

    def _reserve(self, n: int) -> None:
        """Hold room under the caps for ``n`` new images, or raise SpendCapExceeded."""
        with self._lock:
            self.spend_cap.check(self.paid_queries, self._reserved, n)
            self._reserved += n
