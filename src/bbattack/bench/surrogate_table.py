"""What surrogate-guided attacks cost besides queries, in a bench report: one row per attack
(its surrogates named) and threat model, with the wall time per case, the surrogate time per
crafted candidate and the candidates per case, beside the queries.

A case's surrogate work is its task's (a batch of images is crafted together, so the meter
counts the batch): ``seconds_per_candidate`` is the batch's surrogate seconds over the images
it crafted, the same for every case of the batch. Candidates per case are the case's own
``transfer`` queries (each candidate is checked with one query).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._format import Case, _queries, _threat_label, _wall
from .summary import with_surrogate_labels

__all__ = [
    "SURROGATE_HEADER",
    "SURROGATE_NOTE",
    "SurrogateRow",
    "surrogate_cells",
    "surrogate_rows",
]

SURROGATE_HEADER = [
    "threat model",
    "attack",
    "cases",
    "median queries",
    "median wall time per case",
    "surrogate time per candidate",
    "candidates per case (median)",
    "surrogate time per case (median)",
]
SURROGATE_NOTE = (
    "Wall time per case: from the start of its task to the case's end (a batch of images runs "
    "together, on a machine that may have been shared). Surrogate time per candidate: the "
    "task's surrogate seconds over the images it crafted (median over cases). Surrogate time "
    "per case: candidates times that."
)


@dataclass(frozen=True)
class SurrogateRow:
    threat: str
    attack: str
    n: int
    median_queries: float | None
    median_wall_s: float | None
    per_candidate_s: float | None
    median_candidates: float | None
    median_surrogate_s: float | None


def _median(v: Sequence[float]) -> float | None:
    return float(statistics.median(v)) if v else None


def surrogate_rows(cases: Iterable[Case], target: str | None = None) -> list[SurrogateRow]:
    """One row per surrogate-guided attack (as labelled elsewhere in the report) and threat
    model, over finished cases that recorded surrogate work; nothing when none did."""
    groups: dict[tuple[str, str], list[Case]] = defaultdict(list)
    done = [c for c in cases if c.get("success") is not None]
    for c, named in zip(done, with_surrogate_labels(done, target), strict=True):
        if (c.get("provenance") or {}).get("surrogate_work"):
            goal = "untargeted" if int(c.get("target_id", 0)) < 0 else "targeted"
            threat = _threat_label(c["threat"], c["k"], c.get("norm") or "linf", goal)
            groups[(threat, str(named["attack"]))].append(c)
    return [_row(key, cs) for key, cs in sorted(groups.items())]


def _row(key: tuple[str, str], cs: Sequence[Case]) -> SurrogateRow:
    per = [float(c["provenance"]["surrogate_work"]["seconds_per_candidate"]) for c in cs]
    cands = [float((c.get("queries_by_kind") or {}).get("transfer", 0)) for c in cs]
    walls = [float(c["wall_time_s"]) for c in cs if c.get("wall_time_s") is not None]
    return SurrogateRow(
        threat=key[0],
        attack=key[1],
        n=len(cs),
        median_queries=_median([float(c["queries"]) for c in cs]),
        median_wall_s=_median(walls),
        per_candidate_s=_median(per),
        median_candidates=_median(cands),
        median_surrogate_s=_median([p * n for p, n in zip(per, cands, strict=True)]),
    )


def surrogate_cells(rows: Sequence[SurrogateRow]) -> list[list[str]]:
    """The rows as table cells (plain text)."""
    return [
        [
            r.threat,
            r.attack,
            f"{r.n:,}",
            _queries(r.median_queries),
            _wall(r.median_wall_s),
            _wall(r.per_candidate_s),
            _queries(r.median_candidates),
            _wall(r.median_surrogate_s),
        ]
        for r in rows
    ]
