"""Query-path throughput: raw model images/s per backend and batch size, and the queries/s each
attack reaches through the oracle on the same backend, in the same run.

Usage: python benchmarks/throughput.py [--backends onnx,torch] [--images 4] [--steps 6]
Writes benchmarks/results/throughput.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

import bbattack as bb
from bbattack.bench.machine import describe
from bbattack.models import builtin_classifier, to_backend
from bbattack.tuning import CANDIDATES, measure_throughput, tuned_batch_size

RESULTS = Path(__file__).parent / "results"


def backends(names: list[str]) -> dict[str, bb.Classifier]:
    out: dict[str, bb.Classifier] = {}
    for name in names:
        if name == "onnx":
            out["onnx"] = bb.load_model(backend="onnx")
        elif name == "torch":
            out["torch (default: channels-last)"] = bb.load_model(backend="torch")
        elif name == "torch-eager":
            # Plain NCHW eager mode: the baseline the speed goal is stated against.
            out["torch-eager NCHW"] = to_backend(builtin_classifier(batch_size=32), "torch")
    return out


def attack_rate(model: bb.Classifier, threat: str, n_images: int, steps: int) -> dict[str, Any]:
    photos = list(bb.bundled_photos().values())
    x = np.stack([bb.load_image(p) for p in photos[:n_images]])
    start = np.stack([bb.load_image(p) for p in photos[n_images : 2 * n_images]])
    clean_start = model(start).argmax(axis=1)
    view: bb.View = {"ql": bb.Scores(), "pi": bb.TopK(1), "lo": bb.Labels(1)}[threat]
    overrides: dict[str, Any] = {"max_steps": steps}
    if threat == "lo":
        overrides.update(samples=10, noise_samples=10)  # keep the LO step short; same query path
    attack = bb.all_attacks()[threat].cls(**overrides)
    oracle = bb.Oracle(model, view)
    t0 = time.perf_counter()
    attack.run(oracle, x, clean_start, start=None if threat == "ql" else start, seed=0)
    wall = time.perf_counter() - t0
    return {
        "threat": threat,
        "queries": oracle.total_queries,
        "wall_s": wall,
        "queries_per_s": oracle.total_queries / wall,
    }


def square_rates(model: bb.Classifier, batches: list[int], steps: int) -> list[dict[str, Any]]:
    """Square (one query per image per step) through the oracle, against the raw model at the
    same batch size: the per-step overhead of the attack and the oracle, undiluted."""
    photos = list(bb.bundled_photos().values())
    out = []
    for bs in batches:
        x = np.stack([bb.load_image(photos[i % len(photos)]) for i in range(bs)])
        targets = (model(x).argmax(axis=1) + 500) % model.num_classes  # far: no early stop
        oracle = bb.Oracle(model, bb.Scores())
        t0 = time.perf_counter()
        bb.SquareAttack(max_steps=steps).run(oracle, x, targets, seed=0)
        wall = time.perf_counter() - t0
        raw = measure_throughput(model, bs, min_time_s=1.0)
        qps = oracle.total_queries / wall
        out.append({"batch": bs, "queries_per_s": qps, "raw_images_per_s": raw, "ratio": qps / raw})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", default="onnx,torch,torch-eager")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--square-batches", default="1,4,8,16")
    ap.add_argument("--square-steps", type=int, default=500)
    args = ap.parse_args()
    report: dict[str, Any] = {
        "date": date.today().isoformat(),
        "machine": describe(),
        "raw": {},
        "attacks": {},
        "batch_size": {},
    }
    for name, model in backends(args.backends.split(",")).items():
        raw = {bs: measure_throughput(model, bs, min_time_s=1.0) for bs in CANDIDATES}
        report["raw"][name] = raw
        model.batch_size = tuned_batch_size(model)
        report["batch_size"][name] = model.batch_size
        report["attacks"][name] = [
            attack_rate(model, t, args.images, args.steps) for t in ("ql", "pi", "lo")
        ]
        batches = [int(b) for b in args.square_batches.split(",") if b]
        report.setdefault("square", {})[name] = sq = square_rates(model, batches, args.square_steps)
        best = max(raw.values())
        print(
            f"\n{name}: raw images/s by batch size: "
            + ", ".join(f"{bs}: {v:.0f}" for bs, v in raw.items())
            + f"; tuned batch {model.batch_size}",
            flush=True,
        )
        for a in report["attacks"][name]:
            print(
                f"  {a['threat']}: {a['queries_per_s']:.0f} queries/s through the oracle "
                f"({a['queries_per_s'] / best:.0%} of the best raw)",
                flush=True,
            )
        for r in sq:
            print(
                f"  square, batch {r['batch']}: {r['queries_per_s']:.0f} queries/s through the "
                f"oracle, raw {r['raw_images_per_s']:.0f} images/s ({r['ratio']:.0%})",
                flush=True,
            )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "throughput.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
