"""What `bbattack attack` shows while it runs and when it ends: the progress bar and the summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..attacks import StepInfo, registry
from ..attacks.goals import Within
from ..oracle import Oracle
from ..results import AttackResult, ClassRef, TopKEntry
from ._common import err, out

__all__ = ["progress_run", "summary"]


def progress_run(
    attack: registry.Runnable,
    oracle: Oracle,
    x: NDArray[np.float32],
    target: int | None,
    seed: int,
    start: NDArray[np.float32] | None,
    quiet: bool,
    success: Within = "top1",
) -> AttackResult:
    budget = oracle.max_queries or 0
    show_rank = not oracle.view.reveals_scores
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} queries"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=False,
    )

    def on_step(info: StepInfo) -> None:
        if show_rank:
            r = int(info.target_rank[0])
            status = f"target rank {'-' if r < 0 else r + 1}"
        else:
            p = float(info.target_prob[0])
            status = "target p=-" if np.isnan(p) else f"target p={p:.3f}"
        progress.update(
            task, completed=int(info.queries[0]), status=f"{status}  ε={float(info.eps[0]):.4f}"
        )

    task = progress.add_task(f"{attack.name.upper()} attack", total=budget, status="starting")
    started = False

    def first_step(info: StepInfo) -> None:
        # Start drawing only once init (start-image checks) has passed.
        nonlocal started
        if not started:
            progress.start()
            started = True
        on_step(info)

    try:
        result = attack.run(
            oracle, x, target, seed=seed, start=start, success=success, on_step=first_step
        )
        progress.update(task, completed=result.images[0].queries)
    finally:
        if started:
            progress.stop()
    return result


def summary(result: AttackResult, paths: dict[str, Path], ids: bool = True) -> None:
    """Human summary; ``ids=False`` for label APIs, whose label ids mean nothing to a reader."""
    r = result.images[0]

    def show(ref: ClassRef | TopKEntry) -> str:
        return f"{ref.name} ({ref.id})" if ids else f"{ref.name}"

    verdict = "[bold green]SUCCESS[/]" if r.success else "[bold red]FAILED[/]"
    tgt = show(r.target) if r.target else "any other class (untargeted)"
    orig = show(r.original) if r.original else "?"
    out.print(f"{verdict}  {result.attack.upper()} attack: {orig} → {tgt}")
    qs = f"{r.queries_at_success:,}" if r.queries_at_success is not None else "-"
    out.print(
        f"queries: {r.queries:,} used, first success at {qs}; "
        f"L∞ = {r.linf:.4f} (ε = {r.eps:g}), L2 = {r.l2:.3f}; "
        f"{r.wall_time_s:.1f} s; stop: {r.stop_reason}"
    )
    table = Table(title="final top-k (8-bit image, as the oracle reveals it)", title_justify="left")
    table.add_column("rank")
    table.add_column("class")
    table.add_column("score")
    for i, e in enumerate(r.final_topk, 1):
        table.add_row(str(i), show(e), "-" if e.score is None else f"{e.score:.4f}")
    out.print(table)
    for name, p in paths.items():
        out.print(f"  {name:12s} {p}", markup=False)
