"""The perturbation constraint: an L∞ or L2 ball around the source image.

One object per norm does projection, distance, membership and 8-bit quantisation that stays
inside the ball, for our attacks, the baselines and the finish path alike. Radii are per image
(PI and LO shrink theirs), given as an array of one radius per row.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

from ..errors import UserInputError
from ..images import quantize

__all__ = ["NORMS", "Ball", "L2Ball", "LinfBall", "Norm", "make_ball"]

FloatArray = NDArray[np.float32]
Radius = float | NDArray[np.floating]
Norm = Literal["linf", "l2"]
NORMS: tuple[Norm, ...] = ("linf", "l2")
TOL = 1e-6  # float32 slack in membership tests; far below one 8-bit level (1/255)


def _rows(a: NDArray[np.float64]) -> NDArray[np.float64]:
    """(n, features); also for n = 0, where reshape(0, -1) is ambiguous."""
    return a.reshape(len(a), int(np.prod(a.shape[1:])))


def _col(r: Radius, n: int, ndim: int) -> NDArray[np.float64]:
    """Per-row radii shaped to broadcast against (n, C, H, W)."""
    a = np.broadcast_to(np.asarray(r, dtype=np.float64), (n,))
    return a.reshape((n,) + (1,) * (ndim - 1))


@dataclass(frozen=True)
class Ball(ABC):
    """A norm ball of radius ``eps`` (in [0, 1] pixel units) around each source image."""

    eps: float
    norm: ClassVar[Norm]

    def radius(self, radius: Radius | None, n: int) -> NDArray[np.float64]:
        return np.broadcast_to(np.asarray(self.eps if radius is None else radius, np.float64), (n,))

    @abstractmethod
    def distance(self, x: NDArray[np.floating], x0: NDArray[np.floating]) -> NDArray[np.float64]:
        """Per-row distance in this norm."""

    @abstractmethod
    def project(
        self,
        x: FloatArray,
        x0: FloatArray,
        radius: Radius | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> FloatArray:
        """The nearest point (or, for L2, the radial shrink) inside the ball and the bounds."""

    @abstractmethod
    def quantize_inside(
        self, x: FloatArray, x0: FloatArray, radius: Radius | None = None
    ) -> FloatArray:
        """``x`` on the 8-bit grid and still inside the ball: what is queried is what is saved."""

    def contains(
        self, x: NDArray[np.floating], x0: NDArray[np.floating], radius: Radius | None = None
    ) -> NDArray[np.bool_]:
        return np.asarray(self.distance(x, x0) <= self.radius(radius, len(x)) + TOL)

    def describe(self) -> dict[str, float | str]:
        return {"norm": self.norm, "eps": self.eps}


@dataclass(frozen=True)
class LinfBall(Ball):
    """max |x − x0| ≤ ε."""

    norm: ClassVar[Norm] = "linf"

    def distance(self, x: NDArray[np.floating], x0: NDArray[np.floating]) -> NDArray[np.float64]:
        d = _rows(np.asarray(x, np.float64) - np.asarray(x0, np.float64))
        return np.asarray(np.abs(d).max(axis=1))

    def project(
        self,
        x: FloatArray,
        x0: FloatArray,
        radius: Radius | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> FloatArray:
        e = _col(self.radius(radius, len(x)), len(x), x.ndim).astype(np.float32)
        return np.clip(np.clip(x, x0 - e, x0 + e), *bounds).astype(np.float32)

    def quantize_inside(
        self, x: FloatArray, x0: FloatArray, radius: Radius | None = None
    ) -> FloatArray:
        return quantize(x, x0, self.radius(radius, len(x)))


@dataclass(frozen=True)
class L2Ball(Ball):
    """‖x − x0‖₂ ≤ ε over all pixels and channels."""

    norm: ClassVar[Norm] = "l2"

    def distance(self, x: NDArray[np.floating], x0: NDArray[np.floating]) -> NDArray[np.float64]:
        d = _rows(np.asarray(x, np.float64) - np.asarray(x0, np.float64))
        return np.asarray(np.sqrt((d * d).sum(axis=1)))

    def project(
        self,
        x: FloatArray,
        x0: FloatArray,
        radius: Radius | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> FloatArray:
        # Shrink radially, then clip: clipping to a box that holds x0 only shortens the step.
        r = self.radius(radius, len(x))
        d = np.asarray(x, np.float64) - x0
        norm = np.sqrt((_rows(d) ** 2).sum(axis=1))
        scale = np.where(norm > r, r / np.maximum(norm, 1e-30), 1.0)
        out = x0 + d * _col(scale, len(x), x.ndim)
        return np.clip(out, *bounds).astype(np.float32)

    def quantize_inside(
        self, x: FloatArray, x0: FloatArray, radius: Radius | None = None
    ) -> FloatArray:
        """Round to the nearest grid point; rows that rounding pushed out are rounded towards
        x0 instead (never longer than x − x0 when x0 is on the grid), then shrunk if needed."""
        r = self.radius(radius, len(x))
        x64 = np.asarray(x, np.float64) * 255.0
        g0 = np.asarray(x0, np.float64) * 255.0
        q = np.clip(np.rint(x64), 0.0, 255.0)
        out = self._outside(q, g0, r)
        if out.any():
            toward = np.where(x64 > g0, np.floor(x64), np.ceil(x64))
            q[out] = np.clip(toward[out], 0.0, 255.0)
        # x0 off the grid can still leave a row outside: shrink its step until it fits.
        shrink = 1.0
        while (out := self._outside(q, g0, r)).any() and shrink > 1e-3:
            shrink *= 0.9
            q[out] = np.clip(np.rint(g0[out] + (x64[out] - g0[out]) * shrink), 0.0, 255.0)
        return (q / 255.0).astype(np.float32)

    @staticmethod
    def _outside(
        q: NDArray[np.float64], g0: NDArray[np.float64], r: NDArray[np.float64]
    ) -> NDArray[np.bool_]:
        d = _rows((q - g0) / 255.0)
        return np.asarray(np.sqrt((d * d).sum(axis=1)) > r + TOL)


def make_ball(norm: str, eps: float) -> Ball:
    """``linf`` or ``l2`` with radius ``eps``."""
    if eps <= 0 or not np.isfinite(eps):
        raise UserInputError(f"eps must be > 0, got {eps}")
    if norm == "linf":
        if eps > 1.0:
            raise UserInputError(f"an L∞ eps is in [0, 1] pixel units, got {eps}")
        return LinfBall(eps)
    if norm == "l2":
        return L2Ball(eps)
    raise UserInputError(f"unknown norm {norm!r}; choose linf or l2")
