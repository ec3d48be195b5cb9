"""Which backend runs a model (ONNX Runtime or torch), moving a torch model onto it, and the
built-in models loaded on their backend.

A low module: the model-spec layer (:mod:`bbattack.targets.spec`) builds on it, and
:mod:`bbattack.models` re-exports it.
"""

from __future__ import annotations

import copy
from typing import Literal

from . import tuning
from ._classifier import Classifier
from ._onnx import OnnxClassifier
from ._torch import TorchClassifier, builtin_classifier
from .errors import BackendUnavailableError, UserInputError

__all__ = [
    "Backend",
    "cuda_available",
    "load_builtin",
    "onnx_available",
    "resolve_backend",
    "to_backend",
]

Backend = Literal["auto", "onnx", "torch"]


def onnx_available() -> bool:
    """Whether onnxruntime is installed."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cuda_available() -> bool:
    """Whether torch sees a CUDA device."""
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


def load_builtin(full: str, backend: Backend = "auto", batch_size: int | None = None) -> Classifier:
    """The built-in model ``full`` (its full name, ``zoo.BUILTIN``) on a backend."""
    chosen = resolve_backend(backend)  # fail fast, before loading weights
    # channels-last measured 1.3x faster than eager NCHW through the oracle on CPU
    # (BENCHMARKS.md); the ONNX export takes the plain module.
    net = builtin_classifier(full, batch_size or 32, channels_last=chosen == "torch")
    return to_backend(net, chosen, batch_size=batch_size)
