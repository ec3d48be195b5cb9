"""Surrogates: local differentiable models that guide an attack for free.

A surrogate is handed to an attack beside the oracle, never through it, and costs no queries.
It sees the target's input (224×224 RGB in [0, 1]) and applies its own normalisation and input
size. A surrogate with the target's weights is refused: it would be a white-box attack.

The type itself (:class:`Surrogate`, :func:`as_surrogate`) lives low, in ``_surrogate``, where
the spec layer builds on it; this module resolves specs to surrogates above that layer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from . import zoo
from ._classifier import Classifier
from ._surrogate import Surrogate, as_surrogate
from .errors import UserInputError
from .targets.spec import load_surrogate_spec

__all__ = ["Surrogate", "as_surrogate", "load_surrogate", "resolve_surrogates", "surrogate_block"]


def load_surrogate(spec: str) -> Surrogate:
    """A surrogate from a model spec (:mod:`bbattack.targets.spec`): a built-in model by name
    (``lite1``), a TorchScript file or a Hugging Face directory (their preprocessing after
    ``?``: ``net.pt?input_size=32&mean=0.5``), or ``module:function`` returning a torch
    module, a TorchClassifier or a Surrogate."""
    try:
        return load_surrogate_spec(spec)
    except UserInputError as e:  # says which flag: the target's spec fails in its own words
        raise type(e)(f"--surrogate {e}") from None


def resolve_surrogates(
    specs: Sequence[str | Any], target: Classifier | None, target_name: str | None = None
) -> list[Surrogate]:
    """The surrogates ``specs`` name (``all``: every built-in model except the target), each
    checked against the target: one with the target's weights is refused."""
    if target_name is None and target is not None:
        target_name = target.name
    tname = target_name if target_name in zoo.BUILTIN else None
    names: list[str | Any] = []
    for s in specs:
        if s == "all":
            if tname is None and target_name is not None:
                tname = _builtin_or_none(target_name)
            names += [m.short for m in zoo.BUILTIN.values() if m.name != tname]
        else:
            names.append(s)
    out = [load_surrogate(s) if isinstance(s, str) else as_surrogate(s) for s in names]
    target_id = None if target is None else target.weights_id
    for s, spec in zip(out, names, strict=True):
        builtin_same = (
            tname is not None and isinstance(spec, str) and _builtin_or_none(spec) == tname
        )
        if builtin_same or (target_id is not None and s.weights_id == target_id):
            raise UserInputError(
                f"surrogate {s.name} has the target's weights ({s.weights_id}): a surrogate must "
                "be another model (this would be a white-box attack)"
            )
    seen: set[str] = set()
    for s in out:
        if s.weights_id in seen:
            raise UserInputError(f"surrogate {s.name} is given twice")
        seen.add(s.weights_id)
    _one_thread_under_load()
    return out


def _builtin_or_none(name: str) -> str | None:
    try:
        return zoo.canonical(name)
    except UserInputError:
        return None


def _one_thread_under_load() -> None:
    # Bench workers share the cores: two spinning torch threads per worker ran 4-6x slower
    # (shared/notes/models.md).
    if os.environ.get("BBATTACK_THREADS"):
        import torch

        torch.set_num_threads(max(int(os.environ["BBATTACK_THREADS"]), 1))


def surrogate_block(surrogates: Sequence[Surrogate], target: Classifier | None) -> dict[str, Any]:
    """What results record: the surrogates, and whether any is of the target's family."""
    family = None if target is None else target.family
    return {
        "surrogates": [
            {"name": s.name, "family": s.family, "weights": s.weights_id} for s in surrogates
        ],
        "target_family": family,
        "same_family": any(s.family is not None and s.family == family for s in surrogates),
    }
