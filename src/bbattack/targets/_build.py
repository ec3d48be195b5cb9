"""A parsed spec's source behind its preprocessing: a classifier (the target) or a surrogate,
each checked by one dry forward on a dummy batch before anything else uses it."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from .. import tuning
from .._backend import to_backend
from .._classifier import Classifier
from .._onnx import OnnxClassifier, make_session, parity_problem
from .._shared import cache_dir, parity_inputs
from .._surrogate import Surrogate, as_surrogate
from .._torch import TorchClassifier
from ..classes import ClassNames
from ..errors import BackendUnavailableError, UserInputError
from . import _loaders
from ._loaders import Source, first_line
from ._parse import ModelSpec, pipeline_of, read_labels
from ._preprocess import PIXELS, Pipeline

__all__ = ["SpecOnnxClassifier", "open_source", "surrogate", "target"]

FloatArray = NDArray[np.float32]
Backend = Literal["auto", "onnx", "torch"]
DRY_BATCH = 2


def open_source(spec: ModelSpec) -> Source:
    path = Path(spec.source)
    if spec.kind == "onnx":
        return _loaders.open_onnx(path)
    if spec.kind == "torchscript":
        return _loaders.open_torchscript(path)
    if spec.kind == "hf":
        return _loaders.open_hf(path)
    return _loaders.open_factory(spec.source)


class SpecOnnxClassifier(OnnxClassifier):
    """An ONNX model file behind its spec's preprocessing (numpy, before the session)."""

    def __init__(
        self,
        src: Source,
        pipe: Pipeline,
        num_classes: int,
        *,
        batch_size: int,
        class_names: ClassNames,
        digest: str,
    ) -> None:
        Classifier.__init__(
            self,
            PIXELS,
            num_classes,
            output=pipe.outputs,
            batch_size=batch_size,
            class_names=class_names,
        )
        self.session = src.session
        self.input_name = src.session.get_inputs()[0].name
        self.providers = src.session.get_providers()
        self.digest = digest
        self.name = src.name
        self._weights_id = src.weights_id
        self._pre = pipe.numpy()

    def _forward(self, x: FloatArray) -> NDArray[np.floating]:
        return np.asarray(self.session.run(None, {self.input_name: self._pre(x)})[0])


def target(
    spec: ModelSpec, src: Source, backend: Backend, chosen: str, batch_size: int | None
) -> Classifier:
    """The classifier of an opened source, on ``chosen`` (auto: ONNX where the export works)."""
    if src.classifier is not None:
        return _given(spec, src, backend)
    if src.surrogate is not None:
        raise UserInputError(
            f"{spec.source} returned a Surrogate; a target is a torch module or a Classifier"
        )
    pipe = pipeline_of(spec, src.says)
    clf: Classifier
    if src.session is not None:
        if backend == "torch":
            raise UserInputError(f"{spec.source}: an ONNX file runs on ONNX Runtime, not torch")
        fixed = src.batch
        if fixed is not None and fixed != 1:
            raise UserInputError(
                f"{spec.source}: exported for batches of exactly {fixed}; export it with a "
                "dynamic batch axis (or batch 1)"
            )
        pre, inp = pipe.numpy(), src.session.get_inputs()[0].name

        def run(x: FloatArray) -> Any:
            if fixed:  # batch 1: one image at a time
                rows = [src.session.run(None, {inp: pre(x[i : i + 1])})[0] for i in range(len(x))]
                return np.concatenate(rows)
            return src.session.run(None, {inp: pre(x)})[0]

        k = _dry_run(run, pipe, spec.source)
        clf = SpecOnnxClassifier(
            src,
            pipe,
            k,
            batch_size=1 if fixed else batch_size or 32,
            class_names=_names(spec, src, k),
            digest=_digest(spec, src, pipe),
        )
        if not fixed:
            clf.batch_size = batch_size or tuning.tuned_batch_size(clf)
    else:
        clf = _torch_target(spec, src, pipe, backend, chosen, batch_size)
    clf.family = src.family
    clf.preprocessing = pipe.describe()
    return clf


def _torch_target(
    spec: ModelSpec, src: Source, pipe: Pipeline, backend: Backend, chosen: str, bs: int | None
) -> Classifier:
    module = pipe.torch_module(src.module)
    k = _dry_run(_torch_fn(module), pipe, spec.source)
    net = TorchClassifier(
        module,
        PIXELS,
        k,
        output=pipe.outputs,
        batch_size=bs or 32,
        class_names=_names(spec, src, k),
        name=src.name,
    )
    net.family = src.family
    net._weights_id = src.weights_id
    net._digest = _digest(spec, src, pipe)
    clf: Classifier = net
    if chosen == "onnx":
        # A user's module may not export, or export wrongly (checked): auto keeps torch then.
        try:
            clf = _onnx_twin(src, pipe, net)
        except Exception as e:  # noqa: BLE001
            if backend != "auto":
                raise BackendUnavailableError(
                    f"{spec.source}: cannot run on ONNX Runtime ({first_line(e)}); use "
                    "--backend torch"
                ) from None
    clf.batch_size = bs or tuning.tuned_batch_size(clf)
    return clf


def _onnx_twin(src: Source, pipe: Pipeline, net: TorchClassifier) -> SpecOnnxClassifier:
    """The model alone exported to ONNX (cached by weights and spec), its preprocessing in
    numpy before it, checked against torch once. The model is exported by itself: a loaded
    TorchScript module cannot be traced inside another module."""
    import torch

    path = cache_dir() / "onnx" / f"spec-{net.digest}.onnx"
    fresh = not path.exists()
    if fresh:
        h, w = pipe.size or PIXELS[1:]
        shape = (1, h, w, 3) if pipe.layout == "nhwc" else (1, 3, h, w)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
        os.close(fd)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    src.module,
                    (torch.zeros(shape),),
                    tmp,
                    input_names=["x"],
                    output_names=["y"],
                    dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
                    opset_version=17,
                    dynamo=False,
                )
        except BaseException:
            os.unlink(tmp)
            raise
        os.replace(tmp, path)
    assert net.class_names is not None
    twin = SpecOnnxClassifier(
        replace(src, session=make_session(path)),
        pipe,
        net.num_classes,
        batch_size=net.batch_size,
        class_names=net.class_names,
        digest=net.digest,
    )
    if fresh:
        xs = parity_inputs(PIXELS)
        problem = parity_problem(twin(xs), net(xs))
        if problem:
            path.unlink(missing_ok=True)
            raise BackendUnavailableError(f"the ONNX export disagrees with torch: {problem}")
    return twin


def _given(spec: ModelSpec, src: Source, backend: Backend) -> Classifier:
    """A factory's own Classifier: it takes its pixels itself, so only labels apply."""
    clf = src.classifier
    assert clf is not None
    if other := sorted(set(spec.options.given()) - {"labels"}):
        raise UserInputError(
            f"{spec.source} returned a bbattack Classifier, which preprocesses its input "
            f"itself: {', '.join(other)} do not apply (labels do)"
        )
    probs = clf(np.zeros((DRY_BATCH, *clf.input_shape), np.float32))
    _classes(probs, "probs", spec.source)
    if spec.options.labels is not None:
        clf.class_names = _names(spec, src, clf.num_classes)
    if isinstance(clf, TorchClassifier):
        return to_backend(clf, backend, batch_size=clf.batch_size)
    if backend != "auto":
        raise UserInputError(f"{spec.source}: only a torch model can be moved to a backend")
    return clf


def surrogate(spec: ModelSpec, src: Source) -> Surrogate:
    """A surrogate from an opened torch source: logits from [0, 1] pixels, differentiable."""
    ready = src.surrogate or src.classifier
    if ready is not None:
        if spec.options.given():
            raise UserInputError(
                f"{spec.source} returned a ready {type(ready).__name__}: preprocessing options "
                "do not apply"
            )
        if src.classifier is not None and not isinstance(src.classifier, TorchClassifier):
            raise UserInputError(
                f"{spec.source}: a surrogate needs gradients: a torch module, a TorchClassifier "
                f"or a Surrogate, not a {type(src.classifier).__name__}"
            )
        return as_surrogate(ready, spec.source)
    if spec.kind == "factory" and not spec.options.given():
        # A module that takes the target's pixels as they are (any size): nothing to wrap.
        return as_surrogate(src.module, spec.source)
    pipe = pipeline_of(spec, src.says)
    # At the model's own size (no resize): a surrogate sees the target's pixels, any size.
    size = pipe.size or PIXELS[1:]
    _dry_run(_torch_fn(pipe.torch_module(src.module)), pipe, spec.source, size)
    module = pipe.torch_module(src.module, log_probs=pipe.outputs == "probs").eval()
    assert src.weights_id is not None
    return Surrogate(src.name, module, src.family, src.weights_id)


def _torch_fn(module: Any) -> Callable[[FloatArray], Any]:
    import torch

    def run(x: FloatArray) -> Any:
        with torch.inference_mode():
            out = module(torch.from_numpy(x))
        if not isinstance(out, torch.Tensor):
            raise UserInputError(
                f"the model returned {type(out).__name__}, not a (N, classes) tensor"
            )
        return out.float().numpy()

    return run


def _dry_run(
    run: Callable[[FloatArray], Any],
    pipe: Pipeline,
    name: str,
    pixels: tuple[int, int] = PIXELS[1:],
) -> int:
    """One forward on a dummy batch of ``pixels`` images through the preprocessing: the
    number of classes, or one line saying what is wrong."""
    x = np.random.default_rng(0).random((DRY_BATCH, 3, *pixels), dtype=np.float32)
    if not np.isfinite(pipe.numpy()(x)).all():
        raise UserInputError(f"{name}: the preprocessing yields NaN or infinite inputs")
    try:
        out = run(x)
    except UserInputError as e:
        raise UserInputError(f"{name}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a user's model fails in any way on a wrong input
        size = "x".join(map(str, pipe.size or pixels))
        raise UserInputError(
            f"{name}: the model failed on a dummy batch at {size} ({first_line(e)}); check "
            "--input-size, --layout and --channels"
        ) from None
    return _classes(out, pipe.outputs, name)


def _classes(out: Any, outputs: str, name: str) -> int:
    """The number of classes of an output that must be (N, classes), finite, and rows of
    probabilities where ``outputs`` says so."""
    a = np.asarray(out)
    if a.ndim != 2 or a.shape[0] != DRY_BATCH or a.shape[1] < 2:
        raise UserInputError(
            f"{name}: the output is {tuple(a.shape)} for {DRY_BATCH} images; a classifier's "
            "is (N, classes)"
        )
    if not np.isfinite(a).all():
        raise UserInputError(f"{name}: the model outputs NaN or infinite values")
    if outputs == "probs":
        sums = a.sum(axis=1)
        if a.min() < 0 or a.max() > 1 or not np.allclose(sums, 1.0, atol=1e-3):
            raise UserInputError(
                f"{name}: --outputs probs, but the outputs are not probabilities (row sums "
                f"{', '.join(f'{s:.3g}' for s in sums)}): give --outputs logits"
            )
    return int(a.shape[1])


def _names(spec: ModelSpec, src: Source, k: int) -> ClassNames:
    """The labels file's names, else the model's own, else the class ids; as many as classes."""
    path = spec.options.labels
    names = read_labels(path) if path is not None else src.labels
    if names is None:
        return ClassNames.from_names([str(i) for i in range(k)])
    if len(names) != k:
        where = path if path is not None else f"{spec.source} (its config's id2label)"
        raise UserInputError(f"{where}: {len(names)} labels, but the model has {k} classes")
    return ClassNames.from_names(names)


def _digest(spec: ModelSpec, src: Source, pipe: Pipeline) -> str:
    """Weights and preprocessing together: the key of the ONNX export and tuning caches."""
    blob = json.dumps([src.weights_id, spec.text, pipe.describe()], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
