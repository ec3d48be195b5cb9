"""One spec for any model, as the target or as a surrogate.

A spec is a string:

* a built-in model: ``lite0``, ``lite1``, ``lite2``, ``squeezenet`` (or the long names);
* an ONNX file (``model.onnx``, run by ONNX Runtime);
* a TorchScript file (``model.pt``, ``model.ts``: ``torch.jit.save``);
* ``module:function``: a function with no arguments returning a torch module, a bbattack
  Classifier or a Surrogate (its module must be importable: ``PYTHONPATH``);
* a Hugging Face ``transformers`` image-classification directory (``save_pretrained``), read
  offline; its ``preprocessor_config.json`` gives size, mean and std, its config the labels.

plus, after ``?``, the preprocessing the file cannot say (:class:`Preprocessing`), e.g.
``net.pt?input_size=32&mean=0.5&std=0.25&channels=bgr&labels=names.txt``. The CLI's
``--input-size``, ``--mean``, ... flags are the same options for ``--model``; a surrogate
given as a file takes them in its string. :attr:`ModelSpec.text` is the canonical string
(absolute paths, sorted options): run.json and result.json record it, and a resume or a
replay loads the same model from it.
"""

from __future__ import annotations

from typing import Any, Literal

from .. import zoo
from .._backend import load_builtin, resolve_backend
from .._classifier import Classifier
from .._surrogate import Surrogate, as_surrogate
from .._torch import builtin_classifier
from ..errors import UserInputError
from . import _build
from ._parse import ModelSpec, builtin_name, parse_spec, pipeline_of, read_labels, with_options
from ._preprocess import PIXELS, Pipeline, Preprocessing

__all__ = [
    "PIXELS",
    "ModelSpec",
    "Pipeline",
    "Preprocessing",
    "builtin_name",
    "load_spec",
    "load_surrogate_spec",
    "parse_spec",
    "pipeline_of",
    "read_labels",
    "with_options",
]


def load_spec(
    spec: str | ModelSpec,
    *,
    backend: Literal["auto", "onnx", "torch"] = "auto",
    batch_size: int | None = None,
    **options: Any,
) -> Classifier:
    """The classifier a spec names, checked by one dry forward on a dummy batch: its output
    must be (N, classes) and finite, its labels as many as its classes. Everything wrong is
    one line (UserInputError) before any query. ``backend``: ``auto`` runs a torch model on
    ONNX Runtime where it exports (checked for parity), else on torch; an ONNX file always
    runs on ONNX Runtime."""
    s = parse_spec(spec, **options)
    if s.kind == "builtin":
        return load_builtin(s.source, backend, batch_size)
    chosen = resolve_backend(backend)  # fail fast, before loading anything
    src = _build.open_source(s)
    clf = _build.target(s, src, backend, chosen, batch_size)
    clf.spec = s.text
    return clf


def load_surrogate_spec(spec: str | ModelSpec, **options: Any) -> Surrogate:
    """The surrogate a spec names: a torch model behind its (differentiable) preprocessing,
    checked by one dry forward. An ONNX file cannot be one (no gradients)."""
    s = parse_spec(spec, **options)
    if s.kind == "builtin":
        # NCHW: channels-last gave the same bits but no speed-up in a warm measurement
        # (BENCHMARKS.md, "Surrogate crafting time").
        clf = builtin_classifier(s.source)
        return as_surrogate(clf, zoo.builtin(s.source).short)
    if s.kind == "onnx":
        raise UserInputError(
            f"{s.source}: an ONNX model cannot be a surrogate (it has no gradients here); give "
            "its TorchScript file or a module:function"
        )
    return _build.surrogate(s, _build.open_source(s))
