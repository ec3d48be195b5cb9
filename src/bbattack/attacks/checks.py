"""Checks every run makes before its first query: arguments, budgets, the view and the norm.

Shared by our attacks and the baselines, so both refuse the same things with the same words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel

from ..errors import UserInputError, ViewRefused
from ..oracle import NO_LIMIT, Oracle
from .goals import Within
from .registry import AttackInfo, all_attacks, view_refusal

__all__ = ["check_budget", "check_run", "check_surrogates", "run_inputs", "with_overrides"]

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]


def check_run(
    info: AttackInfo, oracle: Oracle, norm: str, untargeted: bool, success: Within
) -> None:
    """Refuse, before any query, a run the attack cannot do: a view it cannot work under, a
    norm it lacks, an untargeted run of a targeted-only attack, top-k success under scores."""
    why = view_refusal(info, oracle.view, norm)
    if why is not None:
        raise ViewRefused(why)
    if untargeted and not info.untargeted:
        raise UserInputError(f"{info.name} is a targeted attack: give a target class")
    if not untargeted and not info.targeted:
        raise UserInputError(f"{info.name} is an untargeted attack: give no target")
    if success == "topk" and oracle.view.kind == "scores":
        raise UserInputError("top-k success needs a top-k or label view (pi or lo)")


def check_surrogates(info: AttackInfo, surrogates: Sequence[Any]) -> None:
    """A surrogate-guided attack needs surrogates; any other attack takes none (a surrogate it
    would ignore is a mistake, not a no-op)."""
    if info.uses_surrogate and not surrogates:
        raise UserInputError(f"{info.name} is surrogate-guided: give --surrogate NAME")
    if surrogates and not info.uses_surrogate:
        raise UserInputError(
            f"{info.name} does not use surrogates; surrogate-guided attacks: "
            + ", ".join(i.name for i in all_attacks().values() if i.uses_surrogate)
        )


def with_overrides(
    config_class: type[BaseModel], config: BaseModel | None, overrides: dict[str, Any]
) -> BaseModel:
    """A config re-validated with keyword overrides: a typo (extra="forbid") or a bad value is
    an error, and so is a config of another class."""
    base = config if config is not None else config_class()
    if not isinstance(base, config_class):
        raise UserInputError(f"expected a {config_class.__name__}, got {type(base).__name__}")
    return type(base).model_validate({**base.model_dump(), **overrides}) if overrides else base


def check_budget(oracle: Oracle, n: int, least: int, capped: bool, cap: str) -> None:
    """Refuse a run that could never stop, or whose budget cannot pay each image the ``least``
    queries it needs (the clean query, start checks, the final verification)."""
    unbounded = oracle.max_queries is None and oracle.total_remaining() >= NO_LIMIT
    if unbounded and not capped:
        raise UserInputError(
            "an attack that cannot succeed would never stop: give the oracle a budget "
            f"(max_queries) or {cap}"
        )
    if oracle.max_queries is not None and oracle.max_queries < least:
        raise UserInputError(
            f"the budget must allow at least {least} queries per image "
            "(the clean query, any start-image check and the final verification)"
        )
    if oracle.total_remaining() < n * least:
        raise UserInputError(
            f"the total budget left ({oracle.total_remaining()}) must allow "
            f"{least} queries per image for {n} images"
        )


def run_inputs(
    oracle: Oracle,
    x: NDArray[np.floating],
    target: int | Sequence[int] | IntArray | None,
    seed: int | Sequence[int],
    name: str,
    untargeted_ok: bool,
) -> tuple[FloatArray, IntArray, IntArray]:
    """Check and normalise ``run`` arguments: images (N, C, H, W), one target (-1: untargeted)
    and one seed per image."""
    xb = np.asarray(x, dtype=np.float32)
    if xb.ndim == 3:
        xb = xb[None]
    if xb.ndim != 4 or tuple(xb.shape[1:]) != oracle.input_shape:
        raise UserInputError(f"images must have shape (N, {oracle.input_shape}), got {xb.shape}")
    n = len(xb)
    if target is None:
        if not untargeted_ok:
            raise UserInputError(f"{name} is a targeted attack: give a target class")
        tgt = np.full(n, -1, dtype=np.int64)
    else:
        tgt = np.broadcast_to(np.asarray(target, dtype=np.int64), (n,)).copy()
        if ((tgt < 0) | (tgt >= oracle.num_classes)).any():
            raise UserInputError(f"target class out of range 0..{oracle.num_classes - 1}")
    seeds = (
        np.arange(n, dtype=np.int64) + seed
        if isinstance(seed, int)
        else np.asarray(seed, dtype=np.int64)
    )
    if seeds.shape != (n,):
        raise UserInputError(f"need one seed per image ({n}), got {len(seeds)}")
    if (seeds < 0).any():
        raise UserInputError("seeds must be >= 0")
    return xb, tgt, seeds
