"""`bbattack bench` and `bbattack report`: benchmark grids and their reports."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import UserInputError
from ._common import app, err, guard, out
from ._common import checkpoint_every as checkpoint_every_opt

__all__ = ["ReportFormat", "bench", "report"]

_RAY_ADDRESS = re.compile(r"^(auto|local|ray://\S+|[\w.-]+:\d+)$")


def _ray_argv(argv: list[str]) -> list[str]:
    """``--ray`` takes an optional address, which click cannot express: a bare ``--ray`` becomes
    ``--ray=local``; ``--ray ADDRESS`` (host:port, ray://..., auto) becomes ``--ray=ADDRESS``."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--ray":
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is not None and _RAY_ADDRESS.match(nxt):
                out.append(f"--ray={nxt}")
                i += 2
                continue
            out.append("--ray=local")
        else:
            out.append(a)
        i += 1
    return out


@app.command()
def bench(
    config: Annotated[Path, typer.Argument(help="grid config (TOML)")],
    db: Annotated[
        Path, typer.Option("--db", help="SQLite results file; rerun the same command to resume")
    ] = Path("bench.sqlite"),
    workers: Annotated[int, typer.Option("--workers", help="local worker processes")] = 1,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="run cases as Ray tasks: --ray starts a local cluster, --ray ADDRESS joins one",
            show_default=False,
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only", help="run only this attack's pending cases (repeatable); the rest wait"
        ),
    ] = None,
    checkpoint_every: Annotated[
        str,
        typer.Option(
            help="checkpoint each running task every N steps (50) or so long (30s): a task "
            "killed mid-run resumes from there (journal and checkpoints in <db>.work/); off: "
            "neither, a killed task starts over"
        ),
    ] = "60s",
    yes: Annotated[
        bool, typer.Option("--yes", help="run a grid of more than 100,000 cases (else refused)")
    ] = False,
) -> None:
    """Run (or resume) a benchmark grid: attacks x threat models x eps x budgets x images.
    Says how big the grid is (cases, queries at most, a rough time) before it starts."""

    def go() -> None:
        from ..bench import run_bench

        every = checkpoint_every_opt(checkpoint_every)  # refused before the config is read
        live = _Live(quiet, _Size(yes, workers))
        try:
            summary = run_bench(
                config,
                db,
                workers=workers,
                use_ray=ray is not None,
                ray_address=ray or "local",
                on_start=live.on_start,
                on_case=live.on_case,
                only=tuple(only or ()),
                checkpoint_every=None if every is None else checkpoint_every.strip(),
                confirm=live.size.confirm,
            )
        except KeyboardInterrupt:
            live.progress.stop()
            err.print(
                f"interrupted; finished cases are saved in {db}: "
                "run the same command again to resume",
                markup=False,
                highlight=False,
            )
            raise typer.Exit(130) from None
        finally:
            live.progress.stop()
        out.print(
            f"{summary.done}/{summary.total} cases done ({summary.ran} now, "
            f"{summary.queries:,} queries), {summary.succeeded} succeeded; results in {db}\n"
            f"report: bbattack report {db} -o report.html",
            markup=False,
            highlight=False,
        )

    guard(go)


class _Live:
    """The bar of a grid's cases; without a terminal (CI, nohup) it is not drawn, and a line
    per case is logged instead."""

    def __init__(self, quiet: bool, size: _Size) -> None:
        self.size = size
        self.progress = _bar(quiet)
        self.task = self.progress.add_task("bench", total=None, rate="", ok="")
        self.lines = not quiet and not err.is_terminal

    @staticmethod
    def fields(s: Any) -> dict[str, Any]:
        rate = f"{s.queries / s.wall_s:,.0f} q/s" if s.wall_s > 0 else "- q/s"
        ok = f"success {s.succeeded}/{s.done}" if s.done else "success -"
        return {"completed": s.done, "total": s.total, "rate": rate, "ok": ok}

    def on_start(self, s: Any) -> None:
        self.size.say()  # every check has passed: never a line beside an error
        self.progress.update(self.task, **self.fields(s))
        if s.done:
            err.print(f"resuming: {s.done}/{s.total} cases already done", highlight=False)
        self.progress.start()

    def on_case(self, c: Any, o: Any, s: Any) -> None:
        fields = self.fields(s)
        self.progress.update(self.task, **fields)
        if not self.lines:
            return
        what = c.attack if c.attack == c.threat else f"{c.attack} ({c.threat})"
        what += f" k={c.k}" if c.k else ""
        tgt = c.target_name or f"class {c.target_id}"
        err.print(
            f"[{s.done}/{s.total}] {what} eps={c.eps:g} seed={c.seed} {c.image} -> {tgt}: "
            f"{'success' if o.success else o.stop_reason}, {o.queries:,} queries, "
            f"{o.wall_time_s:.0f} s; {fields['rate']}, {fields['ok']}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def _bar(quiet: bool) -> Progress:
    from rich.progress import MofNCompleteColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]cases"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[ok]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        disable=quiet,
    )


class _Size:
    """The grid's size: refused above MAX_CASES without --yes, before anything is built; said
    once the grid is ready (or at once before a long build of a huge one)."""

    def __init__(self, yes: bool, workers: int) -> None:
        self.yes, self.workers = yes, workers
        self.size: Any = None
        self.said = False

    def confirm(self, size: Any) -> None:
        from ..bench.size import MAX_CASES

        if size.cases > MAX_CASES and not self.yes:
            raise UserInputError(
                f"the grid has {size.cases:,} cases (more than {MAX_CASES:,}), at most "
                f"{size.queries:,} queries: pass --yes to run it, or make it smaller"
            )
        self.size = size
        if size.cases > MAX_CASES:  # a long build ahead: say so now
            self.say()

    def say(self) -> None:
        if self.size is not None and not self.said:
            err.print(
                self.size.describe(self.workers), markup=False, highlight=False, soft_wrap=True
            )
            self.said = True


class ReportFormat(StrEnum):
    html = "html"
    md = "md"


@app.command()
def report(
    db: Annotated[Path, typer.Argument(help="benchmark database from `bbattack bench`")],
    output: Annotated[Path, typer.Option("--output", "-o", help="output file")] = Path(
        "report.html"
    ),
    fmt: Annotated[ReportFormat, typer.Option("--format", help="html or md")] = ReportFormat.html,
    samples: Annotated[int, typer.Option(help="cases shown in the image grid")] = 8,
    benign: Annotated[
        Path | None,
        typer.Option(
            help="benign false positives per defence (benchmarks/defense_fpr.py --json) for "
            "the defences table"
        ),
    ] = None,
) -> None:
    """Write a self-contained HTML report (tables, plots, images) or Markdown tables."""

    def go() -> None:
        from ..bench.report import write_report

        if samples < 0:
            raise UserInputError(f"--samples must be >= 0, got {samples}")
        write_report(db, output, fmt.value, samples=samples, benign=benign)
        out.print(f"wrote {output}", markup=False, highlight=False)

    guard(go)
