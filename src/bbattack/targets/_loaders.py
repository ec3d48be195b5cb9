"""What each kind of spec names, opened: an ONNX Runtime session, a TorchScript module, a
``module:function``'s return value, a Hugging Face model directory. Each comes back as a
:class:`Source` with what the file itself says about its input (:class:`Preprocessing`), its
class names where it has them, and its weights hash. Anything that is not a model is one line
(UserInputError) naming the file, before any query."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import io
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import zoo
from .._classifier import Classifier
from .._onnx import make_session
from .._surrogate import Surrogate
from ..errors import BackendUnavailableError, UserInputError
from ._preprocess import Preprocessing

__all__ = [
    "HF_HINT",
    "Source",
    "file_digest",
    "first_line",
    "open_factory",
    "open_hf",
    "open_onnx",
    "open_torchscript",
]

HF_HINT = "pip install 'bbattack[hf]'"


@dataclass(frozen=True)
class Source:
    """A model as its file or factory gives it, before the spec's preprocessing. One of
    ``module`` (torch, taking the model's own input), ``session`` (ONNX Runtime),
    ``classifier`` or ``surrogate`` (a factory's ready object) is set."""

    name: str
    module: Any = None
    session: Any = None
    classifier: Classifier | None = None
    surrogate: Surrogate | None = None
    says: Preprocessing = field(default_factory=Preprocessing)  # what the file says
    labels: list[str] | None = None
    family: str | None = None
    weights_id: str | None = None
    batch: int | None = None  # a fixed batch size the model was exported with


def first_line(e: BaseException, limit: int = 160) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def file_digest(path: Path) -> str:
    """SHA-256 (16 hex) of a file's bytes: a file's weights hash."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def open_onnx(path: Path) -> Source:
    """An ONNX model's session; a static input shape gives the layout, size and batch."""
    # ONNX Runtime raises its own exception types for a file that is not a model.
    try:
        session = make_session(path)
    except BackendUnavailableError:
        raise
    except Exception as e:  # noqa: BLE001
        raise UserInputError(f"{path}: not an ONNX model ({first_line(e)})") from None
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].type != "tensor(float)" or len(inputs[0].shape) != 4:
        got = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
        raise UserInputError(
            f"{path}: the model must take one float32 image batch of rank 4, it takes {got}"
        )
    return Source(
        path.name,
        session=session,
        says=_onnx_says(inputs[0].shape),
        weights_id=file_digest(path),
        batch=inputs[0].shape[0] if isinstance(inputs[0].shape[0], int) else None,
    )


def _onnx_says(shape: list[Any]) -> Preprocessing:
    """Layout and size from an input's static dimensions (3 channels first or last)."""
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    layout, hw = None, None
    if dims[1] == 3 and dims[3] != 3:
        layout, hw = "nchw", (dims[2], dims[3])
    elif dims[3] == 3 and dims[1] != 3:
        layout, hw = "nhwc", (dims[1], dims[2])
    size = hw if hw is not None and None not in hw else None
    return Preprocessing.model_validate({"layout": layout, "input_size": size})


def open_torchscript(path: Path) -> Source:
    """A TorchScript module (``torch.jit.save``), on the CPU, frozen."""
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    except Exception as e:  # noqa: BLE001 - what torch raises for a non-TorchScript file varies
        raise UserInputError(
            f"{path}: not a TorchScript file ({first_line(e)}); a state dict or a pickled "
            "module needs a module:function that builds the model"
        ) from None
    module = _frozen(module)
    return Source(path.name, module=module, weights_id=zoo.state_digest(module))


def _frozen(module: Any) -> Any:
    module = module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def open_factory(text: str) -> Source:
    """Import ``module:function`` and call it with no arguments: a torch module, a bbattack
    Classifier or a Surrogate."""
    import torch

    mod_name, _, fn_name = text.partition(":")
    # A user's factory can fail in any way; it gets one line naming it, not a traceback.
    try:
        module = importlib.import_module(mod_name)
    except Exception as e:  # noqa: BLE001
        raise UserInputError(f"{text}: cannot import {mod_name} ({first_line(e)})") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise UserInputError(f"{text}: {mod_name} has no function {fn_name}")
    try:
        obj = fn()
    except Exception as e:  # noqa: BLE001
        raise UserInputError(
            f"{text}: {fn_name}() failed ({first_line(e)}); it must take no arguments"
        ) from None
    if isinstance(obj, Surrogate):
        return Source(text, surrogate=obj, family=obj.family, weights_id=obj.weights_id)
    if isinstance(obj, Classifier):
        return Source(text, classifier=obj, family=obj.family, weights_id=obj.weights_id)
    if isinstance(obj, torch.nn.Module):
        obj = _frozen(obj)
        return Source(text, module=obj, weights_id=zoo.state_digest(obj))
    raise UserInputError(
        f"{text}: expected a torch module, a TorchClassifier or a Surrogate, got "
        f"{type(obj).__name__} (a target may be any bbattack Classifier)"
    )


def open_hf(path: Path) -> Source:
    """A Hugging Face ``transformers`` image classifier saved with ``save_pretrained``, read
    from disk only (never the hub); its ``preprocessor_config.json`` gives size, mean and std,
    its ``config.json`` the class names."""
    try:
        import transformers
    except ImportError:
        raise BackendUnavailableError(
            f"{path}: a Hugging Face model directory needs transformers: {HF_HINT}"
        ) from None
    says = _hf_says(path)
    with _quiet_hf(transformers):
        try:
            model = transformers.AutoModelForImageClassification.from_pretrained(
                str(path), local_files_only=True
            )
        except Exception as e:  # noqa: BLE001 - a bad directory fails in many ways
            raise UserInputError(
                f"{path}: not a transformers image classifier ({first_line(e)})"
            ) from None
    model = _frozen(model)
    id2label = getattr(model.config, "id2label", None) or {}
    labels = [str(id2label[i]) for i in sorted(id2label, key=int)] if id2label else None
    module = _hf_logits_class()(model)
    return Source(
        path.name,
        module=module,
        says=says,
        labels=labels,
        family=getattr(model.config, "model_type", None),
        weights_id=zoo.state_digest(model),
    )


@contextlib.contextmanager
def _quiet_hf(transformers: Any) -> Any:
    """No progress bars or hub chatter on stdout/stderr, and never the network."""
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    transformers.utils.logging.disable_progress_bar()
    level = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        transformers.utils.logging.set_verbosity(level)
        transformers.utils.logging.enable_progress_bar()
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def _hf_says(path: Path) -> Preprocessing:
    """Size, crop, mean, std and scale from ``preprocessor_config.json`` (read as JSON: the
    processor classes are not needed to know what they would do)."""
    cfg_path = path / "preprocessor_config.json"
    if not cfg_path.is_file():
        return Preprocessing()
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserInputError(f"{cfg_path}: unreadable ({first_line(e)})") from None
    if not isinstance(cfg, dict):
        raise UserInputError(f"{cfg_path}: expected a JSON object")
    out: dict[str, Any] = {}
    size, edge = _hf_size(cfg.get("size")) if cfg.get("do_resize", True) else (None, None)
    crop, _ = _hf_size(cfg.get("crop_size")) if cfg.get("do_center_crop") else (None, None)
    if crop is not None:
        out["input_size"], out["resize"] = crop, "center-crop"
        base = edge or (size[0] if size else None)
        if base:
            out["crop"] = min(crop[0] / base, 1.0)
    elif size is not None:
        out["input_size"] = size
        if edge is not None and edge < 384 and cfg.get("crop_pct"):  # ConvNeXt: crop < 384
            out["resize"], out["crop"] = "center-crop", min(float(cfg["crop_pct"]), 1.0)
    # The processor scales 0-255 pixels by rescale_factor, then normalises: fold a factor
    # other than 1/255 into the mean and std, so scale stays 1 or 255.
    k = 255.0 * float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 255.0
    scale = 255 if abs(k - 255.0) < 1e-3 else 1
    k = k / scale
    if cfg.get("do_normalize", True) and "image_mean" in cfg and "image_std" in cfg:
        out["mean"] = tuple(float(m) / k for m in _seq(cfg["image_mean"]))
        out["std"] = tuple(float(s) / k for s in _seq(cfg["image_std"]))
    elif abs(k - 1.0) > 1e-6:
        out["std"] = (1.0 / k,)
    out["scale"] = scale
    try:
        return Preprocessing.model_validate(out)
    except ValueError as e:
        raise UserInputError(f"{cfg_path}: {first_line(e)}") from None


def _seq(v: Any) -> list[Any]:
    return list(v) if isinstance(v, list | tuple) else [v]


def _hf_size(v: Any) -> tuple[tuple[int, int] | None, int | None]:
    """((height, width), shortest edge): ``{"height", "width"}``, ``{"shortest_edge"}`` or a
    number."""
    if isinstance(v, int):
        return (v, v), None
    if isinstance(v, dict):
        if "height" in v and "width" in v:
            return (int(v["height"]), int(v["width"])), None
        if "shortest_edge" in v:
            e = int(v["shortest_edge"])
            return (e, e), e
    return None, None


@functools.cache
def _hf_logits_class() -> type[Any]:
    import torch

    class HFLogits(torch.nn.Module):
        """A transformers classifier as a module from ``pixel_values`` to logits."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Any) -> Any:
            return self.inner(pixel_values=x).logits

    return HFLogits
