"""Small models of every kind a model spec takes, built here (nothing is downloaded): a seeded
5-class CNN on 32×32 inputs, exported to ONNX and TorchScript, behind a ``module:function``
in a temporary module, and a tiny transformers ViT saved with ``save_pretrained``."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

CLASSES = 5
SIZE = 32
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
LABELS = ["apple", "bear", "cat", "dog", "eel"]
FACTORY_MODULE = "spec_tiny_factory"


def tiny_cnn() -> torch.nn.Module:
    """A seeded CNN: (N, 3, 32, 32) → 5 logits; the same weights on every call."""
    torch.manual_seed(7)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AvgPool2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 8 * 8, CLASSES),
    )
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


class ChannelsLast(torch.nn.Module):
    """The tiny CNN taking NHWC input."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_cnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x.permute(0, 3, 1, 2))
        return out


@dataclass(frozen=True)
class Files:
    root: Path
    onnx: Path  # dynamic batch, NCHW 32×32
    onnx_nhwc: Path  # batch fixed at 1, NHWC 32×32
    torchscript: Path
    state_dict: Path  # torch.save of a state dict: not a TorchScript file
    labels: Path  # one per line
    labels_json: Path  # {id: name}
    short_labels: Path  # 3 names for 5 classes
    garbage: Path  # a .onnx that is not a model
    factory: str  # module:function returning the tiny CNN
    hf: Path | None  # a transformers ViT directory (None without transformers)


def export_onnx(module: torch.nn.Module, path: Path, shape: tuple[int, ...], dynamic: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.zeros(shape),),
            str(path),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}} if dynamic else None,
            opset_version=17,
            dynamo=False,
        )


def write_files(root: Path) -> Files:
    """Every kind of model file in ``root``; the factory's module in ``root`` too (put
    ``root`` on sys.path to import it)."""
    net = tiny_cnn()
    export_onnx(net, root / "tiny.onnx", (1, 3, SIZE, SIZE), dynamic=True)
    export_onnx(ChannelsLast(), root / "tiny_nhwc.onnx", (1, SIZE, SIZE, 3), dynamic=False)
    torch.jit.save(torch.jit.script(net), str(root / "tiny.pt"))
    torch.save(net.state_dict(), root / "weights.pt")
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (root / "labels.json").write_text(json.dumps({str(i): n for i, n in enumerate(LABELS)}))
    (root / "short.txt").write_text("a\nb\nc\n")
    (root / "garbage.onnx").write_bytes(b"this is not a model")
    (root / f"{FACTORY_MODULE}.py").write_text(
        "from spec_models import tiny_cnn\n\n\ndef make():\n    return tiny_cnn()\n"
    )
    return Files(
        root=root,
        onnx=root / "tiny.onnx",
        onnx_nhwc=root / "tiny_nhwc.onnx",
        torchscript=root / "tiny.pt",
        state_dict=root / "weights.pt",
        labels=root / "labels.txt",
        labels_json=root / "labels.json",
        short_labels=root / "short.txt",
        garbage=root / "garbage.onnx",
        factory=f"{FACTORY_MODULE}:make",
        hf=write_hf(root / "hf-vit"),
    )


def write_hf(path: Path) -> Path | None:
    """A tiny ViT image classifier (5 labels, 32×32) and its image processor config."""
    try:
        import transformers
    except ImportError:
        return None
    config = transformers.ViTConfig(
        image_size=SIZE,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)},
    )
    torch.manual_seed(3)
    model = transformers.ViTForImageClassification(config)
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model.save_pretrained(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        processor = transformers.ViTImageProcessor(
            size={"height": SIZE, "width": SIZE}, image_mean=list(MEAN), image_std=list(STD)
        )
        processor.save_pretrained(str(path))
    return path


def reference(
    module: Any,
    x: NDArray[np.float32],
    mean: tuple[float, ...] = MEAN,
    std: tuple[float, ...] = STD,
) -> NDArray[np.float32]:
    """What the module itself outputs for [0, 1] images ``x`` resized to 32×32 by torch's own
    bilinear interpolation, then normalised."""
    t = torch.nn.functional.interpolate(
        torch.from_numpy(x), size=(SIZE, SIZE), mode="bilinear", align_corners=False
    )
    t = (t - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        out = module(t)
    return np.asarray(getattr(out, "logits", out).numpy(), np.float32)


def softmax(z: NDArray[np.float32]) -> NDArray[np.float32]:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True), np.float32)
