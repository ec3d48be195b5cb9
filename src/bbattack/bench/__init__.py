"""The benchmark harness: grids of cases from a TOML config, stored in one SQLite file,
resumable after a crash, run locally, in worker processes or on Ray, and reported as HTML."""

from .config import AttackSpec, BenchConfig, load_config
from .db import BenchDB, CaseOutcome, CaseRow
from .runner import BenchSummary, run_bench, run_case

__all__ = [
    "AttackSpec",
    "BenchConfig",
    "BenchDB",
    "BenchSummary",
    "CaseOutcome",
    "CaseRow",
    "load_config",
    "run_bench",
    "run_case",
]
