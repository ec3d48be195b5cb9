"""Classifiers behind the oracle: any callable, any torch module, ONNX Runtime, and the built-in
ImageNet models; :func:`load_model` also takes any model spec (a file, a ``module:function``, a
Hugging Face directory: :mod:`bbattack.targets.spec`).

Every classifier maps float32 images (N, C, H, W) in [0, 1] to class probabilities (N, K).
Attacks never see a classifier; only the Oracle calls it.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from . import tuning, zoo
from ._classifier import CallableClassifier, Classifier, FloatArray, OutputKind, softmax
from ._onnx import OnnxClassifier, parity_problem
from ._shared import cache_dir, parity_inputs
from ._threads import one_torch_thread
from .classes import ClassNames, imagenet_classes
from .errors import BackendUnavailableError, UserInputError

__all__ = [
    "BUILTIN_MODELS",
    "CallableClassifier",
    "Classifier",
    "OnnxClassifier",
    "TorchClassifier",
    "builtin_classifier",
    "cache_dir",
    "cuda_available",
    "load_model",
    "onnx_available",
    "parity_inputs",
    "parity_problem",
    "resolve_backend",
    "softmax",
    "to_backend",
]

Backend = Literal["auto", "onnx", "torch"]
BUILTIN_MODELS = tuple(zoo.BUILTIN)


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


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve_backend(backend: str) -> Literal["onnx", "torch"]:
    """``auto`` is torch on CUDA, else ONNX Runtime (torch if onnxruntime is missing).
    A backend named explicitly must be available: it never falls back."""
    if backend not in ("auto", "onnx", "torch"):
        raise UserInputError(f"unknown backend {backend!r}; choose auto, onnx or torch")
    if backend == "auto":
        if cuda_available() or not onnx_available():
            return "torch"
        return "onnx"
    if backend == "onnx" and not onnx_available():
        raise BackendUnavailableError("backend 'onnx' needs onnxruntime: pip install onnxruntime")
    return "onnx" if backend == "onnx" else "torch"


def to_backend(
    model: TorchClassifier, backend: Backend = "auto", *, batch_size: int | None = None
) -> Classifier:
    """Put a torch model on the chosen backend, with a measured (cached) batch size unless
    ``batch_size`` is given."""
    chosen = resolve_backend(backend)
    # A shallow copy shares the module but leaves the caller's batch size alone.
    clf: Classifier = OnnxClassifier.from_torch(model) if chosen == "onnx" else copy.copy(model)
    clf.batch_size = batch_size or tuning.tuned_batch_size(clf)
    return clf


def load_model(
    spec: Any = "efficientnet-lite0",
    *,
    backend: Backend = "auto",
    batch_size: int | None = None,
    **preprocessing: Any,
) -> Classifier:
    """Load a model on a backend (see :func:`resolve_backend`): a built-in (``lite0``,
    ``lite1``, ``lite2``, ``squeezenet`` or their full names), or any model spec (an ONNX or
    TorchScript file, ``module:function``, a Hugging Face directory; see
    :mod:`bbattack.targets.spec`) with its ``preprocessing`` (``input_size=224``,
    ``mean=(0.485, 0.456, 0.406)``, ``std=...``, ``scale``, ``channels``, ``layout``,
    ``resize``, ``crop``, ``labels``, ``outputs``)."""
    from .targets.spec import builtin_name, load_spec

    full = builtin_name(spec) if isinstance(spec, str) and not preprocessing else None
    if full is None:
        return load_spec(spec, backend=backend, batch_size=batch_size, **preprocessing)
    chosen = resolve_backend(backend)  # fail fast, before loading weights
    # channels-last measured 1.3x faster than eager NCHW through the oracle on CPU
    # (BENCHMARKS.md); the ONNX export takes the plain module.
    net = builtin_classifier(full, batch_size or 32, channels_last=chosen == "torch")
    return to_backend(net, chosen, batch_size=batch_size)
