"""Preprocessing as part of a model spec: what turns the attack's pixels into the model's input.

Attacks work in [0, 1] RGB pixel space, NCHW, at the images' size (a target loaded from a
spec takes 224×224, :data:`PIXELS`; a surrogate, the target's size). A model wants something
else: another size, BGR, 0-255, a per-channel mean and std, channels last.
:class:`Preprocessing` holds what the user said (each option None where the model file or the
default decides), :func:`resolve` fills the gaps, and :class:`Pipeline` applies the result:

1. resize: ``squash`` to the input size, or ``center-crop`` (the largest centred region of the
   model's aspect ratio, times ``crop``, then resized); bilinear, half-pixel centres, no
   antialiasing (``torch.nn.functional.interpolate(..., align_corners=False)``), done as two
   small matrix products so that torch and numpy compute the same thing;
2. reorder the channels (``bgr``);
3. ``(x * scale - mean) / std`` per channel, in the model's channel order;
4. layout (``nhwc``: channels last).

The torch version is differentiable (a surrogate's gradient flows through it); the numpy
version feeds ONNX Runtime. Steps that do nothing are skipped, so a spec costs no more per
query than the arithmetic it asks for.
"""

from __future__ import annotations

import functools
import math
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..errors import UserInputError

__all__ = [
    "PIXELS",
    "Pipeline",
    "Preprocessing",
    "interpolation_matrix",
    "resolve",
]

FloatArray = NDArray[np.float32]
# The attack's pixel space of a target loaded from a spec (images.load_image's default size).
# Its preprocessing takes any size: a surrogate sees the target's.
PIXELS = (3, 224, 224)
Channels = Literal["rgb", "bgr"]
Layout = Literal["nchw", "nhwc"]
Resize = Literal["squash", "center-crop"]
Outputs = Literal["logits", "probs"]


def _floats(v: Any) -> Any:
    """``"0.5,0.4,0.3"``, a number or a list, as a tuple of floats."""
    if isinstance(v, str):
        parts = [p for p in v.replace(" ", "").split(",") if p]
        try:
            return tuple(float(p) for p in parts)
        except ValueError:
            raise ValueError(f"expected numbers separated by commas, got {v!r}") from None
    if isinstance(v, int | float):
        return (float(v),)
    return v


class Preprocessing(BaseModel):
    """What a spec says about the model's input; None: the model file or the default decides
    (224×224, mean 0, std 1, scale 1, RGB, NCHW, squash, logits)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_size: tuple[int, int] | None = None  # (height, width); "224" or "224x160"
    mean: tuple[float, ...] | None = None  # one value or one per channel, model order
    std: tuple[float, ...] | None = None
    scale: Literal[1, 255] | None = None  # pixel values 0-1 or 0-255 before mean and std
    channels: Channels | None = None
    layout: Layout | None = None
    resize: Resize | None = None
    crop: float | None = None  # center-crop: the fraction of the centred region kept
    labels: Path | None = None  # class names: one per line, or a JSON list or {id: name}
    outputs: Outputs | None = None

    @field_validator("input_size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        if isinstance(v, str):
            parts = v.lower().replace("x", ",").split(",")
            try:
                v = [int(p) for p in parts if p.strip()]
            except ValueError:
                raise ValueError(f"expected N or HxW, got {v!r}") from None
        if isinstance(v, int):
            v = (v, v)
        if isinstance(v, list | tuple) and len(v) == 1:
            v = (v[0], v[0])
        if isinstance(v, list | tuple) and any(isinstance(s, int) and s < 1 for s in v):
            raise ValueError(f"sizes must be >= 1, got {tuple(v)}")
        return v

    @field_validator("scale", mode="before")
    @classmethod
    def _scale(cls, v: Any) -> Any:
        try:  # "255" from a spec string, 255.0 from JSON
            return int(float(v)) if v is not None and float(v) in (1, 255) else v
        except (TypeError, ValueError):
            return v

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _channels(cls, v: Any) -> Any:
        return _floats(v)

    @field_validator("mean", "std")
    @classmethod
    def _per_channel(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if v is None:
            return v
        if len(v) not in (1, 3):
            raise ValueError(f"give 1 or 3 values (one per channel), got {len(v)}")
        if not all(math.isfinite(x) for x in v):
            raise ValueError(f"values must be finite, got {v}")
        return v

    @field_validator("std")
    @classmethod
    def _nonzero(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if v is not None and any(x == 0 for x in v):
            raise ValueError(f"a std of 0 divides by zero (NaN input), got {v}")
        return v

    @field_validator("crop")
    @classmethod
    def _fraction(cls, v: float | None) -> float | None:
        if v is not None and not 0 < v <= 1:
            raise ValueError(f"a fraction in (0, 1], got {v}")
        return v

    @field_validator("labels")
    @classmethod
    def _file(cls, v: Path | None) -> Path | None:
        if v is not None and not v.expanduser().is_file():
            raise ValueError(f"{v}: no such file")
        return None if v is None else v.expanduser().resolve()

    @classmethod
    def of(cls, **options: Any) -> Preprocessing:
        """Validated options; a bad one is one line (UserInputError) naming it."""
        try:
            return cls.model_validate(options)
        except ValidationError as e:
            first = e.errors()[0]
            where = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "options"
            msg = str(first["msg"]).removeprefix("Value error, ")
            raise UserInputError(f"{where}: {msg}") from None

    def given(self) -> dict[str, Any]:
        """The options set, as JSON-able values."""
        return self.model_dump(mode="json", exclude_none=True)

    def over(self, defaults: Preprocessing) -> Preprocessing:
        """These options where given, ``defaults`` (what the model file says) elsewhere."""
        return Preprocessing.model_validate({**defaults.given(), **self.given()})

    def query(self) -> str:
        """The options as a spec string's query (``input_size=32&mean=0.5,0.5,0.5``), sorted."""
        items = []
        for k, v in sorted(self.given().items()):
            if isinstance(v, list):
                v = "x".join(str(s) for s in v) if k == "input_size" else ",".join(map(str, v))
            items.append((k, str(v)))
        return urllib.parse.urlencode(items, safe=",/")


def interpolation_matrix(
    out: int, size: int, start: float = 0.0, extent: float | None = None
) -> FloatArray:
    """The (out, size) matrix of a bilinear resize of the window [start, start + extent) of a
    ``size``-pixel axis to ``out`` pixels, with half-pixel centres and edge clamping (what
    ``interpolate(mode="bilinear", align_corners=False)`` does to a whole axis)."""
    extent = float(size) if extent is None else extent
    m = np.zeros((out, size), np.float64)
    src = start + (np.arange(out) + 0.5) * (extent / out) - 0.5
    src = np.clip(src, 0.0, size - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, size - 1)
    w = src - lo
    rows = np.arange(out)
    np.add.at(m, (rows, lo), 1.0 - w)
    np.add.at(m, (rows, hi), w)
    return m.astype(np.float32)


@dataclass(frozen=True)
class Pipeline:
    """Resolved preprocessing: every value concrete. It takes images of any size: the resize
    matrices are made for each input size on first use."""

    size: tuple[int, int] | None  # the model's (height, width); None: the images' own
    resize: Resize
    crop: float
    channels: Channels
    layout: Layout
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    outputs: Outputs

    def describe(self) -> dict[str, Any]:
        """What provenance records of it."""
        return {
            "input_size": None if self.size is None else list(self.size),
            "resize": self.resize,
            "crop": self.crop,
            "channels": self.channels,
            "layout": self.layout,
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
            "outputs": self.outputs,
        }

    def matrices(self, H: int, W: int) -> tuple[FloatArray, FloatArray] | None:
        """The resize of (H, W) images: (rows (h, H), columns transposed (W, w)); None where
        there is nothing to do."""
        h, w = self.size or (H, W)
        ch, cw = float(H), float(W)
        if self.resize == "center-crop":
            # The largest centred window of the model's aspect ratio, times the crop fraction.
            ch, cw = min(float(H), W * h / w), min(float(W), H * w / h)
            ch, cw = ch * self.crop, cw * self.crop
        if (h, w) == (H, W) and (ch, cw) == (float(H), float(W)):
            return None
        rows = interpolation_matrix(h, H, (H - ch) / 2, ch)
        cols = interpolation_matrix(w, W, (W - cw) / 2, cw)
        return rows, np.ascontiguousarray(cols.T)

    def numpy(self) -> Callable[[FloatArray], FloatArray]:
        """The preprocessing as a numpy function: (N, 3, H, W) in [0, 1] → the model's input."""
        made: dict[tuple[int, int], tuple[FloatArray, FloatArray] | None] = {}
        scale = None if self.scale == 1 else np.float32(self.scale)
        mean = _per_channel(self.mean, 0.0)
        std = _per_channel(self.std, 1.0)
        bgr, nhwc = self.channels == "bgr", self.layout == "nhwc"

        def run(x: FloatArray) -> FloatArray:
            hw = (int(x.shape[-2]), int(x.shape[-1]))
            if hw not in made:
                made[hw] = self.matrices(*hw)
            mats = made[hw]
            y: NDArray[Any] = x
            if mats is not None:
                y = mats[0] @ y @ mats[1]
            if bgr:
                y = y[:, ::-1]
            if scale is not None:
                y = y * scale
            if mean is not None:
                y = y - mean
            if std is not None:
                y = y / std
            if nhwc:
                y = y.transpose(0, 2, 3, 1)
            return np.ascontiguousarray(y, dtype=np.float32)

        return run

    def torch_module(self, inner: Any, *, log_probs: bool = False) -> Any:
        """``inner`` behind the preprocessing, as a torch module taking [0, 1] pixels
        (differentiable). ``log_probs``: the log of a probability output, for a surrogate."""
        return _spec_module_class()(inner, self, log_probs)


def _per_channel(values: tuple[float, float, float], neutral: float) -> FloatArray | None:
    """A (3, 1, 1) array, or None where every value is ``neutral`` (a step to skip)."""
    if all(v == neutral for v in values):
        return None
    return np.asarray(values, np.float32).reshape(3, 1, 1)


def resolve(options: Preprocessing) -> Pipeline:
    """Fill what ``options`` leaves open with the defaults: the images' own size, squash,
    RGB, NCHW, scale 1, mean 0, std 1, logits."""

    def three(v: tuple[float, ...] | None, default: float) -> tuple[float, float, float]:
        t = v or (default,)
        return (t[0], t[0], t[0]) if len(t) == 1 else (t[0], t[1], t[2])

    return Pipeline(
        size=options.input_size,
        resize=options.resize or "squash",
        crop=1.0 if options.crop is None else options.crop,
        channels=options.channels or "rgb",
        layout=options.layout or "nchw",
        scale=float(options.scale or 1),
        mean=three(options.mean, 0.0),
        std=three(options.std, 1.0),
        outputs=options.outputs or "logits",
    )


@functools.cache
def _spec_module_class() -> type[Any]:
    import torch  # on first use: an ONNX model's spec never needs torch

    class SpecModule(torch.nn.Module):
        """A model behind its preprocessing: [0, 1] RGB NCHW pixels in, its output out. The
        model is ``inner``, so the weights hash (``zoo.state_digest``) is the model's own;
        the preprocessing constants are not part of the state dict."""

        def __init__(self, inner: Any, pipe: Pipeline, log_probs: bool) -> None:
            super().__init__()
            self.inner = inner
            self.pipe = pipe
            self.bgr, self.nhwc = pipe.channels == "bgr", pipe.layout == "nhwc"
            self.log_probs = log_probs
            self.scale = None if pipe.scale == 1 else float(pipe.scale)
            for name, values, neutral in (("mean", pipe.mean, 0.0), ("std", pipe.std, 1.0)):
                arr = _per_channel(values, neutral)
                t = None if arr is None else torch.from_numpy(arr)
                self.register_buffer(name, t, persistent=False)
            self._made: dict[tuple[Any, ...], Any] = {}

        def _resize(self, x: Any) -> Any:
            key = (int(x.shape[-2]), int(x.shape[-1]), x.device, x.dtype)
            if key not in self._made:
                mats = self.pipe.matrices(key[0], key[1])
                self._made[key] = (
                    None
                    if mats is None
                    else tuple(torch.from_numpy(m).to(device=x.device, dtype=x.dtype) for m in mats)
                )
            mats = self._made[key]
            return x if mats is None else mats[0] @ x @ mats[1]

        def forward(self, x: Any) -> Any:
            x = self._resize(x)
            if self.bgr:
                x = x.flip(1)
            if self.scale is not None:
                x = x * self.scale
            if self.mean is not None:
                x = x - self.mean
            if self.std is not None:
                x = x / self.std
            if self.nhwc:
                x = x.permute(0, 2, 3, 1)
            out = self.inner(x)
            if self.log_probs:
                out = torch.log(out.clamp_min(1e-12))
            return out

    return SpecModule
