"""The spend cap: what paid images cost, and whether ``max_queries`` and ``max_cost`` allow
more of them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import UserInputError
from .errors import SpendCapExceeded, check_int, check_positive

__all__ = ["SpendCap", "usd"]


def usd(v: float) -> str:
    """Dollars for messages: cents from $1 up, four decimals under."""
    return f"${v:,.2f}" if v >= 1 or v == 0 else f"${v:.4f}"


@dataclass(frozen=True)
class SpendCap:
    """At most ``max_queries`` paid images, and at most ``max_cost`` dollars of them at
    ``price_per_1000`` per 1000 (None: no such cap). The counts are the caller's.
    ``price_per_1000`` None: the API has no per-image price (its cost reads 0 and
    ``max_cost`` is refused)."""

    max_queries: int | None = None
    max_cost: float | None = None
    price_per_1000: float | None = 1.50

    def __post_init__(self) -> None:
        if self.price_per_1000 is not None:
            check_positive("price_per_1000", self.price_per_1000)
        elif self.max_cost is not None:
            raise UserInputError(
                "max_cost needs a price: this API has no per-image price, give price_per_1000"
            )
        if self.max_queries is not None:
            check_int("max_queries", self.max_queries, 0, None)
        if self.max_cost is not None and not (self.max_cost >= 0 and math.isfinite(self.max_cost)):
            raise UserInputError(f"max_cost must be >= 0 dollars, got {self.max_cost}")

    def cost(self, n_queries: int) -> float:
        """Dollars that ``n_queries`` paid images cost at ``price_per_1000``."""
        return n_queries * (self.price_per_1000 or 0.0) / 1000.0

    def _at(self) -> str:
        p = self.price_per_1000
        return "(no per-image price)" if p is None else f"at ${p:.2f}/1000"

    def _cost_cap_queries(self) -> int | None:
        """The most paid images ``max_cost`` allows."""
        if self.max_cost is None or self.price_per_1000 is None:
            return None
        # The epsilon lets an exact budget ($0.015 = 10 images at $1.50) be used up.
        return math.floor(self.max_cost * 1000.0 / self.price_per_1000 + 1e-9)

    def remaining(self, paid: int) -> int | None:
        """Paid images the caps still allow after ``paid`` (None: no cap)."""
        room = [
            cap - paid for cap in (self.max_queries, self._cost_cap_queries()) if cap is not None
        ]
        return max(0, min(room)) if room else None

    def describe_plan(self, paid: int, n_queries: int) -> str:
        """What ``n_queries`` more paid images would cost after ``paid``, and whether the caps
        allow them."""
        if n_queries < 0:
            raise UserInputError(f"n_queries must be >= 0, got {n_queries}")
        text = f"expected {n_queries:,} queries ≈ {usd(self.cost(n_queries))} {self._at()}"
        if paid:
            text += f"; {paid:,} already paid ({usd(self.cost(paid))})"
        room = self.remaining(paid)
        if room is not None and n_queries > room:
            text += f"; the spend cap stops it after {room:,} more"
        return text

    def spent(self, paid: int) -> str:
        """``paid`` queries and their cost, for error messages."""
        return f"spent so far: {paid:,} paid queries ({usd(self.cost(paid))} {self._at()})"

    def check(self, paid: int, reserved: int, n: int) -> None:
        """SpendCapExceeded if ``n`` new images on top of ``paid`` and ``reserved`` (held by
        calls in progress) would pass a cap."""
        total = paid + reserved + n
        if self.max_queries is not None and total > self.max_queries:
            raise SpendCapExceeded(
                f"spend cap: this call needs {n:,} paid queries, which would make "
                f"{total:,} > max_queries={self.max_queries:,}; nothing was sent; "
                + self.spent(paid)
            )
        cost_cap = self._cost_cap_queries()
        if self.max_cost is not None and cost_cap is not None and total > cost_cap:
            raise SpendCapExceeded(
                f"spend cap: this call needs {n:,} paid queries, which would make "
                f"{usd(self.cost(total))} > max_cost={usd(self.max_cost)}; "
                "nothing was sent; " + self.spent(paid)
            )
