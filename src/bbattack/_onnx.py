"""ONNX Runtime behind the classifier interface, and the export of a torch classifier to it
(cached by weight hash, checked for parity with torch)."""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._classifier import Classifier, FloatArray, OutputKind
from ._shared import cache_dir, parity_inputs
from ._torch import TorchClassifier
from .classes import ClassNames
from .errors import BackendUnavailableError

__all__ = ["OnnxClassifier", "make_session", "parity_problem"]


def make_session(path: str | os.PathLike[str], providers: list[str] | None = None) -> Any:
    """An ONNX Runtime session on CUDA where its provider is present, else CPU, with the
    threads ``BBATTACK_THREADS`` gives (0: all cores)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailableError(
            "backend 'onnx' needs onnxruntime: pip install onnxruntime"
        ) from None
    available = ort.get_available_providers()
    wanted = providers or [
        p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available
    ]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Parallel benchmark workers share the cores; each gets its slice (0 = all cores).
    opts.intra_op_num_threads = int(os.environ.get("BBATTACK_THREADS", "0"))
    return ort.InferenceSession(str(path), sess_options=opts, providers=wanted)


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
        super().__init__(
            input_shape, num_classes, output=output, batch_size=batch_size, class_names=class_names
        )
        self.session = make_session(path, providers)
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
