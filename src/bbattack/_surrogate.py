"""The surrogate type: a local differentiable model that guides an attack for free.

A low module: the model-spec layer (:mod:`bbattack.targets.spec`) builds surrogates from it,
and :mod:`bbattack.surrogates` (which resolves surrogate specs) re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import zoo
from ._torch import TorchClassifier
from .errors import UserInputError

__all__ = ["Surrogate", "as_surrogate"]


@dataclass(frozen=True, eq=False)
class Surrogate:
    """A torch module from [0, 1] images (N, C, H, W) at the target's input size to logits."""

    name: str
    module: Any
    family: str | None
    weights_id: str

    def logits(self, x: Any) -> Any:
        """Logits on ``x``'s device; the module runs where its weights are (a CUDA model
        gets its input moved there, and autograd carries the gradient back)."""
        dev = next((p.device for p in self.module.parameters()), x.device)
        return self.module(x.to(dev)).to(x.device)


def as_surrogate(obj: Any, name: str | None = None) -> Surrogate:
    """A Surrogate from a Surrogate, a TorchClassifier (its normalisation folded in), or a
    torch module that takes [0, 1] images and returns logits."""
    import torch

    if isinstance(obj, Surrogate):
        return obj
    if isinstance(obj, TorchClassifier):
        module = obj.normalized_module()
        for p in module.parameters():
            p.requires_grad_(False)
        wid = obj.weights_id
        assert wid is not None
        return Surrogate(name or obj.name, module, obj.family, wid)
    if isinstance(obj, torch.nn.Module):
        obj = obj.eval()
        for p in obj.parameters():
            p.requires_grad_(False)
        return Surrogate(name or type(obj).__name__, obj, None, zoo.state_digest(obj))
    raise UserInputError(
        f"surrogate {name or obj!r}: expected a torch module, a TorchClassifier or a Surrogate, "
        f"got {type(obj).__name__}"
    )
