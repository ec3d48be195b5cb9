"""CUDA figures for the torch backend, on a machine with a GPU: raw EfficientNet-Lite0 images/s
by batch size, Square through the oracle against raw at the same batch size, the agreement of
the CUDA model with ONNX Runtime on CPU, and the surrogate-guided attack's crafting speed (its
cost on CPU is minutes per label-only case).

Usage: python benchmarks/cuda.py [--out cuda.json]
Prints Markdown-ready lines and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import numpy as np

import bbattack as bb
from bbattack.attacks.score.square import SquareAttack
from bbattack.attacks.transfer.transfer import TransferAttack
from bbattack.surrogates import load_surrogate
from bbattack.tuning import measure_throughput

# Pairs of transfer.toml (photo -> the clean class of another photo), targeted.
PAIRS = [
    ("coffee", "palace"),
    ("camera", "Egyptian Mau"),
    ("chelsea", "tripod"),
    ("page", "bubble"),
]


def _gpu() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"cuda": False, "torch": torch.__version__}
    p = torch.cuda.get_device_properties(0)
    return {"cuda": True, "torch": torch.__version__, "gpu": p.name, "sms": p.multi_processor_count}


def _square(model: bb.Classifier, batch: int, steps: int) -> dict[str, Any]:
    photos = list(bb.bundled_photos().values())
    x = np.stack([bb.load_image(photos[i % len(photos)]) for i in range(batch)])
    targets = (model(x).argmax(axis=1) + 500) % model.num_classes  # far: no early stop
    oracle = bb.Oracle(model, bb.Scores())
    t0 = time.perf_counter()
    SquareAttack(max_steps=steps).run(oracle, x, targets, seed=0)
    qps = oracle.total_queries / (time.perf_counter() - t0)
    raw = measure_throughput(model, batch, min_time_s=1.0)
    return {"batch": batch, "queries_per_s": qps, "raw_images_per_s": raw, "ratio": qps / raw}


def _transfer(model: bb.Classifier, budget: int) -> dict[str, Any]:
    photos = bb.bundled_photos()
    names = model.class_names
    assert names is not None
    x = np.stack([bb.load_image(photos[p]) for p, _ in PAIRS])
    targets = [names.resolve(t) for _, t in PAIRS]
    sur = [load_surrogate("lite2")]
    oracle = bb.Oracle(model, bb.Scores(), max_queries=budget)
    t0 = time.perf_counter()
    res = TransferAttack().run(oracle, x, targets, seed=0, surrogates=sur)
    wall = time.perf_counter() - t0
    q = [r.queries for r in res.images]
    return {
        "pairs": [f"{p} -> {t}" for p, t in PAIRS],
        "success": [r.success for r in res.images],
        "queries": q,
        "wall_s": wall,
        "s_per_query": wall / max(sum(q), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="cuda.json")
    ap.add_argument("--batches", default="1,4,16,64,256")
    ap.add_argument("--square-batches", default="1,16,64")
    ap.add_argument("--square-steps", type=int, default=300)
    ap.add_argument("--transfer-budget", type=int, default=200)
    args = ap.parse_args()
    report: dict[str, Any] = {"machine": platform.node(), **_gpu()}
    print(report, flush=True)
    model = bb.load_model(backend="torch")

    def save() -> None:  # after each part: a later failure keeps what was measured
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)

    report["raw"] = {}
    for bs in (int(b) for b in args.batches.split(",")):
        report["raw"][bs] = measure_throughput(model, bs, min_time_s=1.0)
        print(f"raw, batch {bs}: {report['raw'][bs]:.0f} images/s", flush=True)
    report["square"] = []
    for bs in (int(b) for b in args.square_batches.split(",")):
        model.batch_size = max(bs, 1)
        r = _square(model, bs, args.square_steps)
        report["square"].append(r)
        print(
            f"square, batch {bs}: {r['queries_per_s']:.0f} queries/s through the oracle, raw "
            f"{r['raw_images_per_s']:.0f} images/s ({r['ratio']:.0%})",
            flush=True,
        )
    save()
    model.batch_size = 64
    report["transfer"] = _transfer(model, args.transfer_budget)
    print("transfer (lite2 surrogate):", report["transfer"], flush=True)
    save()
    x = np.stack([bb.load_image(p) for p in bb.bundled_photos().values()])
    top = model(x).argmax(axis=1)
    top_onnx = bb.load_model(backend="onnx")(x).argmax(axis=1)
    report["agree_with_onnx_cpu"] = f"{int((top == top_onnx).sum())}/{len(x)}"
    print("top-1 agreement, torch backend vs ONNX Runtime CPU:", report["agree_with_onnx_cpu"])
    save()


if __name__ == "__main__":
    main()
