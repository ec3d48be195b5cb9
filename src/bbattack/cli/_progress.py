"""What `bbattack attack` shows while it runs and when it ends: the progress bar and the summary."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..attacks import StepInfo, registry
from ..attacks.request import RunRequest
from ..attacks.transfer._transfer import SurrogateMeter, metered
from ..oracle import Oracle
from ..results import AttackResult, ClassRef, TopKEntry
from ._common import err, out
from ._watch import RetryNotes, Watched

__all__ = ["LOG_EVERY_S", "progress_run", "summary"]

# Without a terminal, a line this often (seconds), as bench logs one per case.
LOG_EVERY_S = 30.0


class _Live:
    """The bar on a terminal, or a line every ``log_every_s`` seconds without one: queries,
    the target's (or the original class's) score, retries, and surrogate work."""

    def __init__(
        self,
        title: str,
        budget: int,
        quiet: bool,
        log_every_s: float,
        status_of: Any,
        retries: RetryNotes | None,
    ) -> None:
        self.title, self.log_every_s, self.retries = title, log_every_s, retries
        self.status_of = status_of
        self.lines = not quiet and not err.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} queries"),
            TextColumn("{task.fields[status]}"),
            TextColumn("[yellow]{task.fields[note]}"),
            TimeElapsedColumn(),
            console=err,
            disable=quiet or self.lines,
            transient=False,
        )
        self.task = self.progress.add_task(title, total=budget, status="starting", note="")
        self.budget, self.started = budget, False
        self.last_line = self.last_it = time.monotonic()

    def start(self) -> None:
        # Drawing starts once init (start-image checks) has passed, or surrogates work.
        if not self.started:
            self.progress.start()
            self.started = True

    def stop(self) -> None:
        if self.started:
            self.progress.stop()

    def step(self, info: StepInfo) -> None:
        self.start()
        note = self.retries.status() if self.retries is not None else ""
        status = self.status_of(info)
        self.progress.update(self.task, completed=int(info.queries[0]), status=status, note=note)
        now = time.monotonic()
        if self.lines and now - self.last_line >= self.log_every_s:
            self.last_line = now
            q, extra = int(info.queries[0]), f", {note}" if note else ""
            _line(f"{self.title}: {q:,}/{self.budget:,} queries, {status}{extra}")

    def retry(self, message: str) -> None:
        if self.lines:
            _line(f"{self.title}: {message}")
        else:
            self.progress.update(self.task, note=message)

    def surrogate(self, meter: SurrogateMeter, done: int, of: int) -> None:
        # Surrogate work comes before the first query: show it, or the bar looks stuck.
        if not self.lines:
            self.start()
        now, before = time.monotonic(), self.last_it
        self.last_it = now
        rate = f", {now - before:.2f} s/it" if done > 1 else ""
        self.progress.update(self.task, note=f"surrogates: iteration {done}/{of}{rate}")
        if self.lines and done == of and now - self.last_line >= self.log_every_s:
            self.last_line = now
            _line(
                f"{self.title}: surrogates: candidate ready ({of} iterations); before it, "
                f"{meter.candidates:,} crafted in {meter.seconds:.0f} s"
            )


def _status(untargeted: bool, watched: Watched | None, show_rank: bool) -> Any:
    def status_of(info: StepInfo) -> str:
        if untargeted and watched is not None and watched.curve.last is not None:
            _, p_orig, r_orig = watched.curve.last
            if show_rank or p_orig is None:
                what = f"original rank {'-' if r_orig is None else r_orig + 1}"
            else:
                what = f"p(original)={p_orig:.3f}"
        elif show_rank:
            r = int(info.target_rank[0])
            what = f"target rank {'-' if r < 0 else r + 1}"
        else:
            p = float(info.target_prob[0])
            what = "target p=-" if np.isnan(p) else f"target p={p:.3f}"
        return f"{what}  ε={float(info.eps[0]):.4f}"

    return status_of


def progress_run(
    attack: registry.Runnable,
    oracle: Oracle,
    request: RunRequest,
    quiet: bool,
    watched: Watched | None = None,
    retries: RetryNotes | None = None,
    log_every_s: float = LOG_EVERY_S,
) -> AttackResult:
    """Run (or resume) ``request`` with a live bar on a terminal (its ``on_step``); without
    one (CI, nohup, a pipe), one line every ``log_every_s`` seconds and one per remote retry.
    An untargeted run shows the clean class's score (from ``watched``) where a targeted one
    shows the target's."""
    untargeted = request.target is None
    status_of = _status(untargeted, watched, not oracle.view.reveals_scores)
    title = f"{attack.name.upper()} attack"
    live = _Live(title, oracle.max_queries or 0, quiet, log_every_s, status_of, retries)
    if retries is not None:
        retries.listeners.append(live.retry)
    try:
        request = replace(request, on_step=live.step)
        with metered(SurrogateMeter(on_iteration=live.surrogate if request.surrogates else None)):
            result = attack.execute(oracle, request)
        live.progress.update(live.task, completed=result.images[0].queries)
    finally:
        if retries is not None:
            retries.listeners.remove(live.retry)
        live.stop()
    return result


def _line(text: str) -> None:
    err.print(f"[{time.strftime('%H:%M:%S')}] {text}", markup=False, highlight=False)


def summary(result: AttackResult, paths: dict[str, Path], ids: bool = True) -> None:
    """Human summary; ``ids=False`` for label APIs, whose label ids mean nothing to a reader."""
    r = result.images[0]

    def show(ref: ClassRef | TopKEntry) -> str:
        return f"{ref.name} ({ref.id})" if ids else f"{ref.name}"

    verdict = "[bold green]SUCCESS[/]" if r.success else "[bold red]FAILED[/]"
    tgt = show(r.target) if r.target else "any other class (untargeted)"
    orig = show(r.original) if r.original else "?"
    if r.stop_reason == "already":
        # Not an attack's success: the clean image already is what was asked for.
        verdict = "[bold yellow]ALREADY[/]"
        what = (
            f"the clean image is already classified as {tgt}: nothing to attack"
            if r.target
            else f"the unperturbed image is no longer classified as {orig}: no attack's doing"
        )
        out.print(f"{verdict}  {what}", highlight=False)
    else:
        out.print(f"{verdict}  {result.attack.upper()} attack: {orig} → {tgt}", highlight=False)
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
