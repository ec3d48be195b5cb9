"""``bbattack models``: the built-in models, with family, input size and measured speed."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from .. import zoo
from ..models import load_model
from ._common import BackendOpt, app, guard, out

__all__ = ["models"]


def _speed(name: str, backend: str, batch: int = 8, repeats: int = 3) -> float:
    """Images per second through the model on this machine (best of ``repeats`` batches)."""
    model = load_model(name, backend=backend)  # type: ignore[arg-type]
    x = np.random.default_rng(0).random((batch, *model.input_shape), dtype=np.float32)
    model(x[:1])  # warm-up: the first call allocates
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        model(x)
        best = min(best, time.perf_counter() - t)
    return batch / best


@app.command("models")
def models(
    speed: Annotated[
        bool, typer.Option(help="measure images per second on this machine (a few seconds)")
    ] = True,
    backend: Annotated[BackendOpt, typer.Option(help="backend measured")] = BackendOpt.auto,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List the built-in models (--model, --surrogate): family, input size, parameters, speed.
    Two families: EfficientNet-Lite (lite0, lite1, lite2; transfer between them is
    within-family) and SqueezeNet v1.1 (squeezenet). All take 224x224 input: Lite1 and Lite2
    resize it to their native size inside the model, SqueezeNet runs at 224 (global pooling)."""

    def go() -> None:
        rows: list[dict[str, Any]] = []
        for m in zoo.BUILTIN.values():
            rows.append(
                {
                    "name": m.short,
                    "full_name": m.name,
                    "family": m.family,
                    "input": "224x224 RGB in [0, 1]",
                    "native_size": m.native_size,
                    "params_millions": m.params_m,
                    "images_per_s": round(_speed(m.name, backend.value), 1) if speed else None,
                }
            )
        if as_json:
            sys.stdout.write(json.dumps(rows, indent=2) + "\n")
            return
        t = Table(title="built-in models (--model NAME, --surrogate NAME)", title_justify="left")
        for col in ("name", "family", "input", "native size", "parameters", "images/s"):
            t.add_column(col)
        for r in rows:
            ips = r["images_per_s"]
            t.add_row(
                r["name"],
                r["family"],
                r["input"],
                f"{r['native_size']}x{r['native_size']}",
                f"{r['params_millions']:.2f} M",
                "-" if ips is None else f"{ips:,.1f} (batch 8, {backend.value})",
            )
        out.print(t)

    guard(go)
