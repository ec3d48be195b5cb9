"""What a model spec costs per query: SqueezeNet v1.1 loaded from an ONNX file through a spec,
against the same network built in (``--model squeezenet``), on ONNX Runtime, batch 8.

Two files: the built-in module exported as it is (it preprocesses inside: the spec adds
nothing), and the bare network without its Caffe preprocessing, loaded with
``--scale 255 --channels bgr --mean 104.006,116.669,122.679 --std 1,1,1`` (the spec does the
preprocessing in numpy before each query). Interleaved timings, median of ``--repeats`` calls.

Usage: python benchmarks/spec_overhead.py [--repeats 15] [--batch 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.functional import max_pool2d, pad

import bbattack as bb
from bbattack.squeezenet import FIRES, POOL_AFTER, SqueezeNet11, _same_pad, squeezenet_torch


class _Bare(torch.nn.Module):
    """SqueezeNet's forward without its preprocessing: it takes the Caffe input."""

    def __init__(self, net: SqueezeNet11) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        top, bottom = _same_pad(int(x.shape[2]), 3, 2)
        left, right = _same_pad(int(x.shape[3]), 3, 2)
        x = max_pool2d(torch.relu(n.conv1(pad(x, (left, right, top, bottom)))), 3, 2)
        for name, _, _ in FIRES:
            x = n.get_submodule(name)(x)
            if name in POOL_AFTER:
                x = max_pool2d(x, 3, 2)
        out: torch.Tensor = n.conv10(x).mean(dim=(2, 3))
        return out


def _export(module: torch.nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.zeros(1, 3, 224, 224),),
            str(path),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    net = squeezenet_torch()
    x = np.stack([bb.load_image(p) for p in list(bb.bundled_photos().values())[: args.batch]])
    with tempfile.TemporaryDirectory() as tmp:
        whole, bare = Path(tmp) / "squeezenet.onnx", Path(tmp) / "squeezenet-bare.onnx"
        _export(net, whole)
        _export(_Bare(net), bare)
        caffe: dict[str, Any] = {"scale": 255, "channels": "bgr", "mean": "104.006,116.669,122.679"}
        models = {
            "built-in (--model squeezenet)": bb.load_model("squeezenet", backend="onnx"),
            "spec: squeezenet.onnx": bb.load_model(str(whole)),
            "spec: squeezenet-bare.onnx + Caffe flags": bb.load_model(str(bare), **caffe),
        }
        ref = models["built-in (--model squeezenet)"](x)
        times: dict[str, list[float]] = {k: [] for k in models}
        for m in models.values():
            m(x)  # warm-up
        for _ in range(args.repeats):  # interleaved: load on the machine hits all alike
            for name, m in models.items():
                t = time.perf_counter()
                p = m(x)
                times[name].append(time.perf_counter() - t)
                assert np.abs(p - ref).max() < 1e-3, name
    base = statistics.median(times["built-in (--model squeezenet)"])
    print(f"batch {args.batch}, median of {args.repeats}, ONNX Runtime")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:45s} {med * 1000:7.1f} ms  {args.batch / med:6.1f} img/s  x{med / base:.3f}")


if __name__ == "__main__":
    main()
