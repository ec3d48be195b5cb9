"""The cost of the query journal and checkpoints on attack throughput: Square (QL, targeted)
on the built-in model, with and without a journal + checkpointer, arms alternating.

    python benchmarks/journal_overhead.py --images 16 --budget 300
    BBATTACK_THREADS=1 python benchmarks/journal_overhead.py --images 16 --budget 300

Prints queries/s per repetition and arm, the medians and the overhead.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bbattack import Oracle, Scores
from bbattack.attacks.checkpoint import Checkpointer, Every
from bbattack.attacks.score.square import SquareAttack
from bbattack.bench.config import load_config
from bbattack.bench.grid import collect_images, draw_targets
from bbattack.models import load_model
from bbattack.oracle import Journal


def main() -> None:
    ap = argparse.ArgumentParser(description="journal + checkpoint overhead on Square")
    ap.add_argument("--images", type=int, default=16, help="images per batch (≤ 16)")
    ap.add_argument("--budget", type=int, default=300, help="queries per image")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    here = Path(__file__).parent
    cfg, _ = load_config(here / "transfer.toml")
    model = load_model("lite0", backend="onnx")
    every = collect_images(cfg, here, (224, 224))
    x = np.stack([im.array() for im in every])
    clean = dict(zip([im.name for im in every], model(x).argmax(1).tolist(), strict=True))
    targets = draw_targets(cfg, every, clean, 1000)  # transfer.toml's targets
    x = x[: args.images]
    target = np.array([targets[im.name][0][0] for im in every[: args.images]])
    rates: dict[str, list[float]] = {"plain": [], "journal+checkpoints": []}
    for rep in range(args.reps):
        for arm, runs in rates.items():
            journal = checkpoints = None
            if arm != "plain":
                d = tempfile.mkdtemp()
                journal = Journal(os.path.join(d, "journal.sqlite"))
                journal.new_run()
                checkpoints = Checkpointer(Path(d) / "checkpoints", Every(seconds=60))
            oracle = Oracle(model, Scores(), max_queries=args.budget, journal=journal)
            t = time.perf_counter()
            result = SquareAttack().run(oracle, x, target, checkpoints=checkpoints)
            q = sum(r.queries for r in result.images)
            runs.append(q / (time.perf_counter() - t))
            print(f"{rep} {arm}: {q} queries, {runs[-1]:.1f} q/s", flush=True)
    plain = statistics.median(rates["plain"])
    kept = statistics.median(rates["journal+checkpoints"])
    print(f"median q/s: plain {plain:.1f}, journal+checkpoints {kept:.1f}")
    print(f"overhead {100 * (plain - kept) / plain:.1f}%")


if __name__ == "__main__":
    main()
