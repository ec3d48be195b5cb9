"""Output files of a single-image attack: adv.png, figure.png, result.json, trace.jsonl."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .images import save_png
from .results import AttackResult, ImageResult, StepRecord, write_atomic

__all__ = ["save_figure", "save_trace_plot", "write_outputs"]


def save_figure(
    x0: NDArray[np.floating],
    xadv: NDArray[np.floating],
    path: Path,
    titles: tuple[str, str],
    eps: float,
) -> None:
    """original | adversarial | perturbation amplified to fill the colour range. The panel is
    scaled by, and labelled with, the measured L∞ distance (``eps`` only when there is none):
    an attack that ends outside its ball shows how far it really is."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    delta = (np.asarray(xadv, np.float64) - np.asarray(x0, np.float64)).transpose(1, 2, 0)
    linf = float(np.abs(delta).max()) if delta.size else 0.0
    scale = linf if linf > 0 else eps
    amp = np.clip(0.5 + delta / (2 * scale), 0.0, 1.0)
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.8), dpi=100)
    inside = "" if linf <= eps + 1e-6 else f", outside ε = {eps:g}"
    panels = [
        (np.asarray(x0).transpose(1, 2, 0), titles[0]),
        (np.asarray(xadv).transpose(1, 2, 0), titles[1]),
        (amp, f"perturbation (L∞ = {linf:.3g} → full range{inside})"),
    ]
    for ax, (img, title) in zip(axes, panels, strict=True):
        # Grey-scale images arrive as (H, W, 1): show them as grey, not as a colour map.
        ax.imshow(np.clip(img[..., 0] if img.shape[-1] == 1 else img, 0, 1), cmap="gray")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_trace_plot(
    trace: list[StepRecord],
    path: Path,
    title: str,
    original: list[tuple[int, float | None, int | None]] | None = None,
) -> None:
    """Target score (or rank) and ε against queries, from one image's trace. An untargeted run
    has no target: ``original`` (queries, score, rank of the clean class after each check)
    is drawn instead."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = [t.queries for t in trace]
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    probs = [np.nan if t.target_prob is None else t.target_prob for t in trace]
    ranks = [np.nan if t.target_rank is None else t.target_rank + 1 for t in trace]
    who = "target"
    if original and not any(np.isfinite(probs)) and not any(np.isfinite(ranks)):
        who = "original class"
        q = [p[0] for p in original]
        probs = [np.nan if p[1] is None else p[1] for p in original]
        ranks = [np.nan if p[2] is None else p[2] + 1 for p in original]
    if any(np.isfinite(probs)):
        ax.plot(q, probs, color="tab:blue", lw=1.2, label=f"{who} score")
        ax.set_ylabel(f"{who} score", color="tab:blue")
    else:
        ax.plot(q, ranks, color="tab:blue", lw=1.2, label=f"{who} rank")
        ax.set_ylabel(f"{who} rank (1 = top)", color="tab:blue")
        ax.invert_yaxis()
    ax.set_xlabel("queries")
    ax2 = ax.twinx()
    ax2.plot([t.queries for t in trace], [t.eps for t in trace], color="tab:red", lw=1.2)
    ax2.set_ylabel("ε (L∞ box)", color="tab:red")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(
    result: AttackResult,
    x0: NDArray[np.float32],
    out: Path,
    extra: dict[str, Any] | None = None,
    curve: Any = None,
) -> dict[str, Path]:
    """Write the outputs of image 0 into ``out``. Files are staged and moved in at the end
    (result.json last, so its presence means a complete set), and an interrupted run leaves no
    half-written output. ``curve`` (an object with ``points``: the clean class's score after
    each check) draws an untargeted run's trace plot."""
    out.mkdir(parents=True, exist_ok=True)
    r = result.images[0]
    stage = Path(tempfile.mkdtemp(dir=out, prefix=".staging-"))
    try:
        save_png(result.x_adv[0], stage / "adv.png")

        def label(c: object) -> str:
            return getattr(c, "name", None) or str(getattr(c, "id", "?"))

        after = _after_title(r)
        before = f"original: {label(r.original)}" if r.original else "original"
        save_figure(x0, result.x_adv[0], stage / "figure.png", (before, after), r.eps)
        doc = {**result.image_json(0), **(extra or {})}
        write_atomic(stage / "result.json", json.dumps(doc, indent=2) + "\n")
        write_atomic(stage / "trace.jsonl", result.trace_jsonl(0))
        trace = [t for t in result.trace if t.image == 0]
        goal = label(r.target) if r.target else "any other class"
        src = label(r.original) if r.original else "?"
        verdict = "success" if r.success else "no success"
        verdict = "already there" if r.stop_reason == "already" else verdict
        title = f"{result.attack.upper()} attack: {src} → {goal} ({verdict}, {r.queries:,} queries)"
        points = getattr(curve, "points", None)
        save_trace_plot(trace, stage / "trace.png", title, original=points)
        paths = {}
        for name in ("adv.png", "figure.png", "trace.png", "trace.jsonl", "result.json"):
            os.replace(stage / name, out / name)
            paths[name] = out / name
        return paths
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _after_title(r: ImageResult) -> str:
    """The adversarial panel's title: the labels that decided success. A label API's top label
    is often a coarse one ("Animal") that the original had too; where the target is among the
    final labels, it is named with its rank."""
    top = r.final_topk[0] if r.final_topk else None
    if top is None:
        return "adversarial"
    first = top.name or str(top.id)
    tgt = r.target
    if tgt is None or top.id == tgt.id:
        return f"adversarial: {first}"
    rank = next((i for i, e in enumerate(r.final_topk, 1) if e.id == tgt.id), None)
    if rank is None:
        return f"adversarial: {first}"
    return f"adversarial: {tgt.name or tgt.id} (label {rank} of {len(r.final_topk)}; top: {first})"
