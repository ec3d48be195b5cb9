"""A torch module behind the classifier interface, and the built-in models as such.

A low module: the model-spec layer (:mod:`bbattack.targets.spec`) builds on it, and
:mod:`bbattack.models` re-exports it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import zoo
from ._classifier import Classifier, FloatArray, OutputKind
from ._threads import one_torch_thread
from .classes import ClassNames, imagenet_classes

__all__ = ["TorchClassifier", "builtin_classifier"]


class TorchClassifier(Classifier):
    """Wraps a ``torch.nn.Module`` that takes preprocessed (N, C, H, W) tensors.

    ``mean``/``std`` describe the normalisation the module expects, applied inside the wrapper
    so that attacks work in [0, 1] pixel space.
    """

    backend = "torch"

    def __init__(
        self,
        module: Any,
        input_shape: tuple[int, int, int],
        num_classes: int,
        *,
        mean: float | tuple[float, ...] = 0.0,
        std: float | tuple[float, ...] = 1.0,
        output: OutputKind = "logits",
        batch_size: int = 64,
        device: str = "auto",
        channels_last: bool = False,
        compile: bool = False,
        class_names: ClassNames | None = None,
        name: str = "torch-module",
    ) -> None:
        import torch

        super().__init__(
            input_shape, num_classes, output=output, batch_size=batch_size, class_names=class_names
        )
        self.torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.module = module.eval().to(self.device)
        self.channels_last = channels_last
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self._run = torch.compile(self.module) if compile else self.module
        c = input_shape[0]
        self.mean = (
            torch.tensor(np.broadcast_to(np.asarray(mean, np.float32), (c,)).copy())
            .view(1, c, 1, 1)
            .to(self.device)
        )
        self.std = (
            torch.tensor(np.broadcast_to(np.asarray(std, np.float32), (c,)).copy())
            .view(1, c, 1, 1)
            .to(self.device)
        )
        self.name = name

    def normalized_module(self) -> Any:
        """The module with the normalisation folded in: takes [0, 1] images."""
        torch = self.torch

        class _Normalized(torch.nn.Module):  # type: ignore[misc,name-defined]
            def __init__(self, inner: Any, mean: Any, std: Any) -> None:
                super().__init__()
                self.inner = inner
                # On the module's device: a CUDA model normalises on the GPU.
                self.register_buffer("mean", mean)
                self.register_buffer("std", std)

            def forward(self, x: Any) -> Any:
                return self.inner((x - self.mean) / self.std)

        return _Normalized(self.module, self.mean, self.std).eval()

    @property
    def weights_id(self) -> str | None:
        if self._weights_id is None:
            self._weights_id = zoo.state_digest(self.module)
        return self._weights_id

    @property
    def digest(self) -> str:
        if not hasattr(self, "_digest"):
            self._digest = self.weights_digest()
        return self._digest

    def weights_digest(self) -> str:
        """A hash of the weights, normalisation and input shape: the key of the ONNX cache."""
        h = hashlib.sha256()
        h.update(repr((self.input_shape, self.num_classes, self.output)).encode())
        h.update(self.mean.cpu().numpy().tobytes() + self.std.cpu().numpy().tobytes())
        for k, v in self.module.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    @one_torch_thread  # the same scores, to the bit, whatever the thread setting
    def _forward(self, x: FloatArray) -> NDArray[np.floating]:
        torch = self.torch
        with torch.inference_mode():
            t = (torch.from_numpy(x).to(self.device, non_blocking=True) - self.mean) / self.std
            if self.channels_last:
                t = t.contiguous(memory_format=torch.channels_last)
            out = self._run(t)
            return np.asarray(out.float().cpu().numpy())


def builtin_classifier(
    name: str = "efficientnet-lite0", batch_size: int = 32, channels_last: bool = False
) -> TorchClassifier:
    """A built-in model (``zoo.BUILTIN``) as a TorchClassifier on 224×224 [0, 1] input."""
    spec = zoo.builtin(name)
    net = zoo.builtin_torch(spec.name)
    clf = TorchClassifier(
        net,
        (3, 224, 224),
        1000,
        mean=spec.mean,  # SqueezeNet preprocesses inside its module (0 and 1 here)
        std=spec.std,
        batch_size=batch_size,
        channels_last=channels_last,
        class_names=imagenet_classes(),
        name=spec.name,
    )
    clf.family = spec.family
    return clf
