"""Attacks. Each sees only an Oracle."""

from typing import Any

from .base import Attack, AttackConfig, AttackState, StepInfo
from .partial import LOAttack, LOConfig, PIAttack, PIConfig
from .ql import QLAttack, QLConfig

ATTACKS: dict[str, type[Attack[Any]]] = {"ql": QLAttack, "pi": PIAttack, "lo": LOAttack}

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackConfig",
    "AttackState",
    "LOAttack",
    "LOConfig",
    "PIAttack",
    "PIConfig",
    "QLAttack",
    "QLConfig",
    "StepInfo",
]
