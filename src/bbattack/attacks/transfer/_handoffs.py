"""The query attacks the surrogate-guided attack hands its rows to, built from its config."""

from __future__ import annotations

from ..label.hsj import HopSkipJumpAttack
from ..label.pi_square import PISquareAttack
from ..label.rays import RaySAttack
from ..label.square_topk import TopKSquare
from ..score.square import SquareAttack
from ._prior_square import PriorSquare
from ._transfer_config import TransferConfig
from .gfcs import GFCSAttack

__all__ = ["gfcs", "hsj", "pi_square", "rays", "square"]


def square(c: TransferConfig, topk: bool = False) -> SquareAttack:
    """Square after the candidates: on the shown clean score under top-k (``topk``), with
    prior-signed windows where ``prior`` is set (L∞), else plain."""
    if topk:
        return TopKSquare(eps=c.eps, norm=c.norm, p_init=c.p_init, p_init_untargeted=0.05)
    if c.prior > 0 and c.norm == "linf":
        return PriorSquare(
            eps=c.eps, norm=c.norm, p_init=c.p_init, p_init_untargeted=0.05, prior_max=c.prior
        )
    return SquareAttack(eps=c.eps, norm=c.norm, p_init=c.p_init, p_init_untargeted=0.05)


def gfcs(c: TransferConfig) -> GFCSAttack:
    return GFCSAttack(eps=c.eps, norm=c.norm)


def rays(c: TransferConfig) -> RaySAttack:
    return RaySAttack(eps=c.eps)


def pi_square(c: TransferConfig) -> PISquareAttack:
    return PISquareAttack(eps=c.eps)


def hsj(c: TransferConfig) -> HopSkipJumpAttack:
    return HopSkipJumpAttack(eps=c.eps)
