"""The numbers behind the benchmark report: finished cases grouped per grid point, the
paper's Table 1 layout, the image-grid sample and the cell formatting that the HTML and
Markdown reports share.

Which attacks are ours and which are baselines is decided in one place, ``_attack_key``,
which asks the attack registry.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CASE_COLUMNS",
    "PAPER_TABLE1",
    "PaperRow",
    "SummaryRow",
    "pick_samples",
    "summarise",
]

Case = Mapping[str, Any]

_THREAT_ORDER = {"ql": 0, "pi": 1, "lo": 2}
_DASH = "—"


@dataclass(frozen=True)
class SummaryRow:
    """One grid point (threat, k, attack, ε, budget) over its finished cases. Queries are
    ``queries_at_success`` over successful cases; distortions are over successful cases too
    (a failed PI/LO run may end outside ε, which would say nothing about the attack)."""

    threat: str
    k: int
    attack: str
    eps: float
    budget: int
    n: int
    successes: int
    mean_queries: float | None
    median_queries: float | None
    mean_linf: float | None
    mean_l2: float | None

    @property
    def success_rate(self) -> float:
        return self.successes / self.n if self.n else 0.0


@dataclass(frozen=True)
class PaperRow:
    """A row of Table 1 of Ilyas et al. (ICML 2018): targeted, ε = 0.05, InceptionV3, 1,000
    ImageNet validation images, k = 1 for PI and LO, queries over successful attacks."""

    threat: str
    success: str
    median: str


# The paper prints success rate and median queries only (no mean). Figures as recalled in the
# project's research notes (paper.md §2); check them against the PDF before citing elsewhere.
PAPER_TABLE1 = (
    PaperRow("ql", "99.2%", "11,550"),
    PaperRow("pi", "93.6%", "49,624"),
    PaperRow("lo", "90%", "2.7 \u00d7 10\u2076"),  # 2.7 x 10^6
)
_PAPER_EPS = 0.05
_PAPER_K = 1
_PAPER_LABEL = "Ilyas et al. 2018 (paper, InceptionV3)"
_PAPER_NOTE = (
    f"{_PAPER_LABEL}, Table 1: targeted, ε = 0.05, 1,000 ImageNet validation images with "
    "random targets, k = 1 for PI and LO. The paper gives success rate and median queries only."
)


# -- pure helpers ---------------------------------------------------------------------------


def _attack_key(attack: str) -> tuple[int, int, str]:
    """Ours first in registry order, then the baselines alphabetically (the registry says
    which is which), then names this bbattack does not know (an older database)."""
    from ..attacks import registry

    table = registry.all_attacks()
    info = table.get(attack)
    if info is None:
        return (2, 0, attack)
    if info.baseline:
        return (1, 0, attack)
    return (0, list(table).index(attack), attack)


def _threat_key(threat: str) -> tuple[int, str]:
    return (_THREAT_ORDER.get(threat, len(_THREAT_ORDER)), threat)


def _done(cases: Iterable[Case]) -> list[Case]:
    return [c for c in cases if c.get("success") is not None]


def _q_success(c: Case) -> int:
    q = c.get("queries_at_success")
    return int(q if q is not None else c["queries"])


def summarise(cases: Iterable[Case]) -> list[SummaryRow]:
    """Group finished cases by (threat, k, attack, ε, budget), in report order: threat
    (ql, pi, lo, others), k, attack (ours first), ε, budget. Pending cases are ignored."""
    groups: dict[tuple[str, int, str, float, int], list[Case]] = defaultdict(list)
    for c in _done(cases):
        groups[(c["threat"], c["k"], c["attack"], c["eps"], c["budget"])].append(c)

    def order(key: tuple[str, int, str, float, int]) -> tuple[Any, ...]:
        threat, k, attack, eps, budget = key
        return (_threat_key(threat), k, _attack_key(attack), eps, budget)

    rows = []
    for key in sorted(groups, key=order):
        cs = groups[key]
        won = [c for c in cs if c["success"]]
        qs = [_q_success(c) for c in won]
        linf = [float(c["linf"]) for c in won if c.get("linf") is not None]
        l2 = [float(c["l2"]) for c in won if c.get("l2") is not None]
        rows.append(
            SummaryRow(
                *key,
                n=len(cs),
                successes=len(won),
                mean_queries=statistics.fmean(qs) if qs else None,
                median_queries=float(statistics.median(qs)) if qs else None,
                mean_linf=statistics.fmean(linf) if linf else None,
                mean_l2=statistics.fmean(l2) if l2 else None,
            )
        )
    return rows


def pick_samples(cases: Sequence[Case], n: int) -> list[Case]:
    """Up to ``n`` finished cases for the image grid: successes first, then failures, each
    taken round-robin over attacks (ours first) so that every attack shows up early."""
    picked: list[Case] = []
    for want in (True, False):
        queues: dict[str, list[Case]] = defaultdict(list)
        for c in _done(cases):
            if bool(c["success"]) is want:
                queues[c["attack"]].append(c)
        lanes = [queues[a] for a in sorted(queues, key=_attack_key)]
        depth = max((len(q) for q in lanes), default=0)
        picked += [lane[i] for i in range(depth) for lane in lanes if i < len(lane)]
    return picked[: max(n, 0)]


# -- formatting -----------------------------------------------------------------------------


def _int(v: int | None) -> str:
    return _DASH if v is None else f"{v:,}"


def _queries(v: float | None) -> str:
    if v is None:
        return _DASH
    return f"{v:,.0f}"  # a mean or median of query counts: a fraction of a query says nothing


def _float(v: float | None, digits: int) -> str:
    return _DASH if v is None else f"{v:.{digits}f}"


def _wall(v: float | None) -> str:
    if v is None:
        return _DASH
    return f"{v:.2f} s" if v < 10 else f"{v:,.1f} s"  # small cases run in well under 1 s


def _eps(v: float) -> str:
    return f"{v:g}"


def _success(row: SummaryRow) -> str:
    return f"{row.successes:,}/{row.n:,} ({row.success_rate:.1%})"


def _threat_label(threat: str, k: int) -> str:
    if threat == "ql":
        return "QL: full scores"
    if threat == "pi":
        return f"PI: top-{k} with scores"
    if threat == "lo":
        return f"LO: top-{k} labels"
    return f"{threat}, k = {k}"


def _class(name: str | None, cid: int | None) -> str:
    if cid is None:
        return name or _DASH
    return f"{name} ({cid})" if name else f"class {cid}"


def _final(c: Case) -> str:
    topk = c.get("final_topk") or []
    if not topk:
        return _class(None, c.get("final_top1"))
    top = topk[0]
    label = _class(top.get("name"), top.get("id"))
    score = top.get("score")
    return label if score is None else f"{label}, p = {float(score):.3f}"


@dataclass(frozen=True)
class _Cell:
    success: str
    mean: str
    median: str


_EMPTY = _Cell(_DASH, _DASH, _DASH)


@dataclass(frozen=True)
class _T1Row:
    threat: str
    attack: str
    budget: str
    cells: tuple[_Cell, ...]
    paper: bool = False


def _table1(rows: Sequence[SummaryRow]) -> tuple[list[str], list[_T1Row]]:
    """The paper's Table 1 layout: a line per (threat, k, attack, budget), ε as column
    groups, and the paper's row after each threat model it applies to."""
    eps = sorted({r.eps for r in rows})
    lines: dict[tuple[str, int, str, int], dict[float, SummaryRow]] = defaultdict(dict)
    for r in rows:
        lines[(r.threat, r.k, r.attack, r.budget)][r.eps] = r
    keys = sorted(lines, key=lambda t: (_threat_key(t[0]), t[1], _attack_key(t[2]), t[3]))
    paper = {p.threat: p for p in PAPER_TABLE1}
    has_paper_eps = any(abs(e - _PAPER_EPS) < 1e-9 for e in eps)
    out: list[_T1Row] = []
    for i, (threat, k, attack, budget) in enumerate(keys):
        by_eps = lines[(threat, k, attack, budget)]
        cells = []
        for e in eps:
            s = by_eps.get(e)
            cells.append(
                _EMPTY
                if s is None
                else _Cell(_success(s), _queries(s.mean_queries), _queries(s.median_queries))
            )
        out.append(_T1Row(_threat_label(threat, k), attack, _int(budget), tuple(cells)))
        last_of_group = i + 1 == len(keys) or keys[i + 1][:2] != (threat, k)
        p = paper.get(threat)
        if last_of_group and p and has_paper_eps and (threat == "ql" or k == _PAPER_K):
            pcells = tuple(
                _Cell(p.success, _DASH, p.median) if abs(e - _PAPER_EPS) < 1e-9 else _EMPTY
                for e in eps
            )
            out.append(_T1Row(_threat_label(threat, k), _PAPER_LABEL, _DASH, pcells, True))
    return [_eps(e) for e in eps], out


CASE_COLUMNS = (
    "idx",
    "attack",
    "threat",
    "k",
    "ε",
    "budget",
    "image",
    "target",
    "success",
    "queries",
    "queries at success",
    "L∞",
    "L2",
    "stop reason",
    "wall time",
)
_CASE_NUMERIC = frozenset(
    {"idx", "k", "ε", "budget", "queries", "queries at success", "L∞", "L2", "wall time"}
)


def _case_cells(c: Case) -> list[str]:
    wall = c.get("wall_time_s")
    return [
        str(c["idx"]),
        c["attack"],
        c["threat"],
        _DASH if c["threat"] == "ql" else str(c["k"]),  # QL reveals every score: no k
        _eps(c["eps"]),
        _int(c["budget"]),
        c["image"],
        _class(c.get("target_name"), c.get("target_id")),
        "yes" if c["success"] else "no",
        _int(c.get("queries")),
        _int(c.get("queries_at_success")),
        _float(c.get("linf"), 4),
        _float(c.get("l2"), 3),
        c.get("stop_reason") or _DASH,
        _wall(wall),
    ]
