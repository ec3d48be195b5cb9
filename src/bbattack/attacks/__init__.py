"""Attacks. Each sees only an Oracle; the registry lists them all.

The attack classes and their configs (``SquareAttack``, ``SquareConfig``, ...) are not listed
here: they are read from the registry, so a new attack file is public once it registers.
"""

from typing import Any

from .balls import NORMS, Ball, L2Ball, LinfBall, make_ball
from .base import Attack, AttackConfig, AttackState, StepInfo
from .goals import Goal
from .registry import (
    AttackInfo,
    Paper,
    all_attacks,
    default_attack,
    get,
    public_attribute,
    public_classes,
    register,
)
from .request import RunRequest

__all__ = [
    "NORMS",
    "Attack",
    "AttackConfig",
    "AttackInfo",
    "AttackState",
    "Ball",
    "Goal",
    "L2Ball",
    "LinfBall",
    "Paper",
    "RunRequest",
    "StepInfo",
    "all_attacks",
    "default_attack",
    "get",
    "make_ball",
    "register",
]
__all__ += public_classes(__name__)  # every registered attack class and its config


def __getattr__(name: str) -> Any:
    return public_attribute(__name__, name, __name__)
