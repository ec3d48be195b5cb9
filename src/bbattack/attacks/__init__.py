"""Attacks. Each sees only an Oracle; the registry lists them all."""

from .balls import NORMS, Ball, L2Ball, LinfBall, make_ball
from .base import Attack, AttackConfig, AttackState, StepInfo
from .goals import Goal
from .partial import LOAttack, LOConfig, PIAttack, PIConfig
from .ql import QLAttack, QLConfig
from .registry import AttackInfo, Paper, all_attacks, default_attack, get, register

__all__ = [
    "NORMS",
    "Attack",
    "AttackConfig",
    "AttackInfo",
    "AttackState",
    "Ball",
    "Goal",
    "L2Ball",
    "LOAttack",
    "LOConfig",
    "LinfBall",
    "PIAttack",
    "PIConfig",
    "Paper",
    "QLAttack",
    "QLConfig",
    "StepInfo",
    "all_attacks",
    "default_attack",
    "get",
    "make_ball",
    "register",
]
