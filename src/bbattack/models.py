"""Classifiers behind the oracle: any callable, any torch module, ONNX Runtime, and the built-in
ImageNet models; :func:`load_model` also takes any model spec (a file, a ``module:function``, a
Hugging Face directory: :mod:`bbattack.targets.spec`).

Every classifier maps float32 images (N, C, H, W) in [0, 1] to class probabilities (N, K).
Attacks never see a classifier; only the Oracle calls it.

This module is the public face: the classifiers live in low modules (``_classifier``,
``_torch``, ``_onnx``, ``_backend``) that the spec layer builds on; only :func:`load_model`,
which dispatches to that layer, is written here.
"""

from __future__ import annotations

from typing import Any

from . import zoo
from ._backend import Backend as Backend  # a type, not in __all__ (as before)
from ._backend import (
    cuda_available,
    load_builtin,
    onnx_available,
    resolve_backend,
    to_backend,
)
from ._classifier import CallableClassifier, Classifier, softmax
from ._onnx import OnnxClassifier, parity_problem
from ._shared import cache_dir, parity_inputs
from ._torch import TorchClassifier, builtin_classifier
from .targets.spec import builtin_name, load_spec

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

BUILTIN_MODELS = tuple(zoo.BUILTIN)


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
    full = builtin_name(spec) if isinstance(spec, str) and not preprocessing else None
    if full is None:
        return load_spec(spec, backend=backend, batch_size=batch_size, **preprocessing)
    return load_builtin(full, backend, batch_size)
