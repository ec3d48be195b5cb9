"""Attacks. Each sees only an Oracle; the registry lists them all."""

from .balls import NORMS, Ball, L2Ball, LinfBall, make_ball
from .bandits import BanditsAttack, BanditsConfig
from .base import Attack, AttackConfig, AttackState, StepInfo
from .gfcs import GFCSAttack, GFCSConfig
from .goals import Goal
from .hsj import HopSkipJumpAttack, HopSkipJumpConfig
from .parsimonious import ParsimoniousAttack, ParsimoniousConfig
from .partial import LOAttack, LOConfig, PIAttack, PIConfig
from .pi_square import PISquareAttack, PISquareConfig
from .ql import QLAttack, QLConfig
from .rays import RaySAttack, RaySConfig
from .registry import AttackInfo, Paper, all_attacks, default_attack, get, register
from .signopt import SignOPTAttack, SignOPTConfig
from .simba import SimBAAttack, SimBAConfig
from .square import SquareAttack, SquareConfig
from .transfer import TransferAttack, TransferConfig

__all__ = [
    "NORMS",
    "Attack",
    "AttackConfig",
    "AttackInfo",
    "AttackState",
    "Ball",
    "BanditsAttack",
    "BanditsConfig",
    "GFCSAttack",
    "GFCSConfig",
    "Goal",
    "HopSkipJumpAttack",
    "HopSkipJumpConfig",
    "L2Ball",
    "LOAttack",
    "LOConfig",
    "LinfBall",
    "PIAttack",
    "PIConfig",
    "PISquareAttack",
    "PISquareConfig",
    "Paper",
    "ParsimoniousAttack",
    "ParsimoniousConfig",
    "QLAttack",
    "QLConfig",
    "RaySAttack",
    "RaySConfig",
    "SignOPTAttack",
    "SignOPTConfig",
    "SimBAAttack",
    "SimBAConfig",
    "SquareAttack",
    "SquareConfig",
    "StepInfo",
    "TransferAttack",
    "TransferConfig",
    "all_attacks",
    "default_attack",
    "get",
    "make_ball",
    "register",
]
