"""Classifiers behind the oracle: any callable, any torch module, ONNX Runtime, and the built-in
ImageNet EfficientNet-Lite0.

Every classifier maps float32 images (N, C, H, W) in [0, 1] to class probabilities (N, K).
Attacks never see a classifier; only the Oracle calls it.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import tempfile
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from . import tuning, zoo
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

FloatArray = NDArray[np.float32]
OutputKind = Literal["logits", "probs"]
Backend = Literal["auto", "onnx", "torch"]
BUILTIN_MODELS = tuple(zoo.BUILTIN)


def softmax(z: NDArray[np.floating]) -> FloatArray:
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: FloatArray = (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
    return out


class Classifier(ABC):
    """Maps (N, C, H, W) float32 images in [0, 1] to (N, K) probabilities, in chunks."""

    name: str = "classifier"
    backend: str = "python"
    family: str | None = None  # architecture family, where known (surrogate reports)
    _weights_id: str | None = None

    @property
    def weights_id(self) -> str | None:
        """A hash of the weights alone, where known: a surrogate with the target's weights is
        refused by it."""
        return self._weights_id

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        *,
        output: OutputKind = "logits",
        batch_size: int = 64,
        class_names: ClassNames | None = None,
    ) -> None:
        if batch_size < 1:
            raise UserInputError(f"batch_size must be >= 1, got {batch_size}")
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.output = output
        self.batch_size = batch_size
        self.class_names = class_names

    @abstractmethod
    def _forward(self, x: FloatArray) -> NDArray[np.floating]:
        """Raw model outputs (logits or probabilities) for one chunk."""

    def __call__(self, x: NDArray[np.floating]) -> FloatArray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"expected images of shape (N, {self.input_shape}), got {x.shape}")
        if len(x) == 0:
            return np.zeros((0, self.num_classes), np.float32)
        # Chunks bound memory; results do not depend on the chunking.
        outs = [
            self._forward(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)
        ]
        raw = np.concatenate(outs, axis=0)
        if self.output == "logits":
            return softmax(raw)
        return np.asarray(raw, dtype=np.float32)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, backend={self.backend!r}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes})"
        )


class CallableClassifier(Classifier):
    """Wraps any Python callable ``fn(x: ndarray (N,C,H,W) float32) -> logits or probabilities``."""

    backend = "callable"

    def __init__(
        self,
        fn: Callable[[FloatArray], NDArray[np.floating]],
        input_shape: tuple[int, int, int],
        num_classes: int,
        *,
        output: OutputKind = "logits",
        batch_size: int = 64,
        class_names: ClassNames | None = None,
        name: str = "callable",
    ) -> None:
        super().__init__(
            input_shape, num_classes, output=output, batch_size=batch_size, class_names=class_names
        )
        self.fn = fn
        self.name = name

    def _forward(self, x: FloatArray) -> NDArray[np.floating]:
        return np.asarray(self.fn(x))


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


class OnnxClassifier(Classifier):
    """Runs an ONNX model with ONNX Runtime (CPU, or CUDA where its provider is present).

    ONNX Runtime gives the same output for a row whatever the batch it sits in, so batched
    attacks reproduce single-image runs exactly.
    """

    backend = "onnx"

    def __init__(
        self,
        path: str | os.PathLike[str],
        input_shape: tuple[int, int, int],
        num_classes: int,
        *,
        output: OutputKind = "logits",
        batch_size: int = 32,
        providers: list[str] | None = None,
        class_names: ClassNames | None = None,
        name: str = "onnx-model",
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailableError(
                "backend 'onnx' needs onnxruntime: pip install onnxruntime"
            ) from None
        super().__init__(
            input_shape, num_classes, output=output, batch_size=batch_size, class_names=class_names
        )
        available = ort.get_available_providers()
        wanted = providers or [
            p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available
        ]
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Parallel benchmark workers share the cores; each gets its slice (0 = all cores).
        opts.intra_op_num_threads = int(os.environ.get("BBATTACK_THREADS", "0"))
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=wanted)
        self.input_name = self.session.get_inputs()[0].name
        self.path = Path(path)
        self.providers = self.session.get_providers()
        self.digest = self.path.stem
        self.name = name

    def _forward(self, x: FloatArray) -> NDArray[np.floating]:
        return np.asarray(self.session.run(None, {self.input_name: x})[0])

    @classmethod
    def from_torch(
        cls,
        model: TorchClassifier,
        *,
        batch_size: int = 32,
        check_inputs: FloatArray | None = None,
        tolerance: float = 1e-4,
    ) -> OnnxClassifier:
        """Export a TorchClassifier to ONNX once, cache it by weight hash, and check parity."""
        torch = model.torch
        path = cache_dir() / "onnx" / f"{model.name}-{model.digest}.onnx"
        fresh = not path.exists()
        if fresh:
            path.parent.mkdir(parents=True, exist_ok=True)
            module = model.normalized_module().cpu()
            example = torch.zeros((1, *model.input_shape), dtype=torch.float32)
            buf = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module,
                    (example,),
                    buf,
                    input_names=["x"],
                    output_names=["y"],
                    dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
                    opset_version=17,
                    dynamo=False,
                )
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(buf.getvalue())
            os.replace(tmp, path)
        onnx_model = cls(
            path,
            model.input_shape,
            model.num_classes,
            output=model.output,
            batch_size=batch_size,
            class_names=model.class_names,
            name=model.name,
        )
        onnx_model.family = model.family
        onnx_model._weights_id = model.weights_id
        if fresh:
            xs = check_inputs if check_inputs is not None else parity_inputs(model.input_shape)
            problem = parity_problem(onnx_model(xs), model(xs), tolerance)
            if problem:
                path.unlink(missing_ok=True)
                raise BackendUnavailableError(
                    f"ONNX export of {model.name} disagrees with torch: {problem}"
                )
        return onnx_model


def parity_problem(p: FloatArray, q: FloatArray, tolerance: float = 1e-4) -> str | None:
    """Why two backends' probabilities disagree (max |Δp| or top-5), or None if they agree."""
    diff = float(np.abs(p - q).max())
    if diff > tolerance:
        return f"max |Δp| = {diff:.2e} > {tolerance:g}"
    k = min(5, p.shape[1])
    p5 = np.argsort(-p, axis=1, kind="stable")[:, :k]
    q5 = np.argsort(-q, axis=1, kind="stable")[:, :k]
    # Classes whose scores tie within the tolerance may swap places; compare sets for those.
    bad = [i for i in range(len(p)) if set(p5[i]) != set(q5[i])]
    if bad:
        return f"top-{k} differs on {len(bad)} input(s)"
    return None


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
    name: str = "efficientnet-lite0",
    *,
    backend: Backend = "auto",
    batch_size: int | None = None,
) -> Classifier:
    """Load a built-in model (``lite0``, ``lite1``, ``lite2``, ``squeezenet`` or their full
    names) on a backend (see :func:`resolve_backend`)."""
    full = zoo.canonical(name)
    chosen = resolve_backend(backend)  # fail fast, before loading weights
    # channels-last measured 1.3x faster than eager NCHW through the oracle on CPU
    # (BENCHMARKS.md); the ONNX export takes the plain module.
    net = builtin_classifier(full, batch_size or 32, channels_last=chosen == "torch")
    return to_backend(net, chosen, batch_size=batch_size)
