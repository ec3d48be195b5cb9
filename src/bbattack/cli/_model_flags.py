"""The preprocessing flags of ``--model`` (``--input-size``, ``--mean``, ...): what a model
file cannot say about its input. They join the model's spec string as its options
(:func:`bbattack.targets.spec.with_options`), which run.json records and a resume or a
replay loads again; a surrogate given as a file takes the same options in its own string
(``--surrogate 'net.pt?input_size=32&mean=0.5'``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

__all__ = [
    "Channels",
    "InputSize",
    "Labels",
    "Layout",
    "Mean",
    "Outputs",
    "Resize",
    "Scale",
    "Std",
]

_PANEL = "Model file (--model FILE.onnx|FILE.pt|module:function|HF-DIR)"


def _opt(flag: str, text: str) -> Any:
    return typer.Option(flag, help=text, rich_help_panel=_PANEL)


InputSize = Annotated[
    str | None, _opt("--input-size", "the model's input: N or HxW (default: 224, or the file's)")
]
Mean = Annotated[
    str | None, _opt("--mean", "per-channel mean, model channel order: 0.485,0.456,0.406")
]
Std = Annotated[str | None, _opt("--std", "per-channel std (default 1): 0.229,0.224,0.225")]
Scale = Annotated[str | None, _opt("--scale", "pixel range before mean/std: 1 (default) or 255")]
Channels = Annotated[str | None, _opt("--channels", "channel order: rgb (default) or bgr")]
Layout = Annotated[str | None, _opt("--layout", "nchw (default) or nhwc (channels last)")]
Resize = Annotated[
    str | None, _opt("--resize", "squash (default) or center-crop to the model's aspect ratio")
]
Labels = Annotated[
    str | None, _opt("--labels", "class names: a file, one per line, or JSON (list or {id: name})")
]
Outputs = Annotated[str | None, _opt("--outputs", "what the model returns: logits or probs")]
