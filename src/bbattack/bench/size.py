"""How big a grid is, counted from its config without building a case: its cases, the queries
they may spend at most, and a rough time. ``bbattack bench`` says so before it starts, and asks
for ``--yes`` above :data:`MAX_CASES`."""

from __future__ import annotations

from dataclasses import dataclass

from .config import BenchConfig

__all__ = ["MAX_CASES", "RATE", "GridSize", "grid_size", "image_count"]

# Above this many cases a grid needs --yes: it takes minutes to build and gigabytes to hold.
MAX_CASES = 100_000
# Queries per second per worker of our attacks on the built-in model on a CPU (BENCHMARKS.md:
# 100-160): the estimate is only as good as this guess for another model or machine.
RATE = 150.0


@dataclass(frozen=True)
class GridSize:
    cases: int
    queries: int  # the sum of the cases' budgets: attacks that succeed stop earlier

    def seconds(self, workers: int = 1) -> float:
        return self.queries / (RATE * max(1, workers))

    def describe(self, workers: int = 1) -> str:
        who = f"{workers} workers" if workers > 1 else "1 worker"
        return (
            f"grid: {_n(self.cases, 'case')}, at most {_n(self.queries, 'query')}; about "
            f"{duration(self.seconds(workers))} at most with {who} at ~{RATE:.0f} queries/s "
            "each (less where attacks succeed early)"
        )


def _n(count: int, noun: str) -> str:
    many = "queries" if noun == "query" else f"{noun}s"
    return f"{count:,} {noun if count == 1 else many}"


def duration(seconds: float) -> str:
    """A rough, readable span: 40 s, 12 min, 3.5 h, 9.2 days, 41 years."""
    for unit, size in (("years", 365 * 86400.0), ("days", 86400.0), ("h", 3600.0)):
        if seconds >= 2 * size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def image_count(cfg: BenchConfig) -> int:
    """The images a grid names (a name given twice is refused later, when they are read); with
    package photo sets, an upper bound: the photos the target does not qualify are dropped."""
    if cfg.images.photos == "all":
        from ..images import bundled_photos

        n = len(bundled_photos()) + len(cfg.images.paths)
    else:
        n = len(cfg.images.photos) + len(cfg.images.paths)
    if sets := cfg.images.set_names():
        from ..photosets import photo_set, split_photos

        split = cfg.images.split
        n += sum(len(photo_set(s) if split is None else split_photos(split, s)) for s in sets)
    return min(n, cfg.images.limit) if cfg.images.limit else n


def grid_size(cfg: BenchConfig) -> GridSize:
    """The cases :func:`~bbattack.bench.grid.build_cases` would build, counted (the same
    axes, multiplied out)."""
    images = image_count(cfg)
    cases = queries = 0
    for spec in cfg.attacks:
        views = sum(1 if t == "ql" else len(spec.k) for t in spec.threats())
        goals = sum(cfg.targets.per_image if g == "targeted" else 1 for g in spec.goal)
        seeds = len(spec.seeds if spec.seeds is not None else cfg.seeds)
        defenses = len(spec.defenses())  # one case per entry of the defence axis
        per_budget = views * len(spec.balls()) * goals * images * seeds * defenses
        cases += per_budget * len(spec.budget)
        queries += per_budget * sum(spec.budget)
    return GridSize(cases, queries)
