"""The numbers behind the benchmark report: finished cases grouped per grid point, the
paper's Table 1 layout and the image-grid sample (cell formatting: ``_format``).

Which attacks are ours and which are baselines is decided in one place, ``_attack_key``,
which asks the attack registry.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ._format import (
    _DASH,
    CASE_COLUMNS,
    Case,
    _eps,
    _int,
    _queries,
    _threat_label,
)

__all__ = [
    "CASE_COLUMNS",
    "PAPER_TABLE1",
    "PaperRow",
    "PeerRow",
    "SummaryRow",
    "defense_label",
    "pick_samples",
    "summarise",
    "versus_peers",
    "with_surrogate_labels",
]


_THREAT_ORDER = {"ql": 0, "pi": 1, "lo": 2}


@dataclass(frozen=True)
class SummaryRow:
    """One grid point (threat, k, attack, norm, goal, ε, budget) over its finished cases.
    Queries are ``queries_at_success`` over successful cases; distortions are over successful
    cases too (a failed PI/LO run may end outside ε, which would say nothing about the attack)."""

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
    norm: str = "linf"
    goal: str = "targeted"

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


def with_surrogate_labels(cases: Iterable[Case], target: str | None = None) -> list[Case]:
    """Cases whose ``attack`` names its surrogates and other parameters too (``transfer
    [lite1+lite2]``, ``square [reuse=True]``), so that an attack with different surrogate
    sets or parameters makes different report rows;
    ``; same family`` where a built-in surrogate shares the architecture family of ``target``
    (a built-in model)."""
    out = []
    for c in cases:
        p = c.get("params")
        if not isinstance(p, dict) or not p:
            out.append(c)
            continue
        sur = p.get("surrogates")
        head = (
            ("+".join(sur) + ("; same family" if _same_family(sur, target) else "")) if sur else ""
        )
        rest = [f"{k}={v}" for k, v in sorted(p.items()) if k not in ("surrogates", "defense")]
        if p.get("defense"):
            rest.append(f"vs {defense_label(p['defense'])}")
        label = "; ".join([head, *rest] if head else rest)
        out.append({**c, "attack": f"{c['attack']} [{label}]"})
    return out


def defense_label(stack: Sequence[dict[str, Any]]) -> str:
    """A defence stack in a row label: each layer's name and the parameters it sets away
    from that defence's defaults (``blacklight:action=silent+rnd``)."""
    from ..defenses import build

    parts = []
    for layer in stack:
        default = build({"name": layer["name"]}).describe()
        diff = [f"{k}={v}" for k, v in layer.items() if k != "name" and default.get(k) != v]
        parts.append(str(layer["name"]) + (":" + ",".join(diff) if diff else ""))
    return "+".join(parts)


def _same_family(surrogates: Sequence[str], target: str | None) -> bool:
    from .. import zoo

    fam = zoo.BUILTIN[target].family if target in zoo.BUILTIN else None
    return fam is not None and any(
        ":" not in s and zoo.builtin(s).family == fam for s in surrogates
    )


def _attack_key(attack: str) -> tuple[int, int, str]:
    """Ours first in registry order, then the baselines alphabetically (the registry says
    which is which), then names this bbattack does not know (an older database)."""
    from ..attacks import registry

    table = registry.all_attacks()
    info = table.get(attack.split(" [")[0])
    if info is None:
        return (2, 0, attack)
    if info.baseline:
        return (1, 0, attack)
    return (0, list(table).index(attack.split(" [")[0]), attack)


def _threat_key(threat: str) -> tuple[int, str]:
    return (_THREAT_ORDER.get(threat, len(_THREAT_ORDER)), threat)


def _done(cases: Iterable[Case]) -> list[Case]:
    return [c for c in cases if c.get("success") is not None]


def _q_success(c: Case) -> int:
    q = c.get("queries_at_success")
    return int(q if q is not None else c["queries"])


def _goal(c: Case) -> str:
    t = c.get("target_id")
    return "untargeted" if t is not None and int(t) < 0 else "targeted"


def summarise(cases: Iterable[Case]) -> list[SummaryRow]:
    """Group finished cases by (threat, k, attack, norm, goal, ε, budget), in report order:
    threat (ql, pi, lo, others), k, norm, goal (targeted first), attack (ours first), ε,
    budget. Pending cases are ignored."""
    groups: dict[tuple[str, int, str, str, str, float, int], list[Case]] = defaultdict(list)
    for c in _done(cases):
        norm = c.get("norm") or "linf"
        key = (c["threat"], c["k"], c["attack"], norm, _goal(c), c["eps"], c["budget"])
        groups[key].append(c)

    def order(key: tuple[str, int, str, str, str, float, int]) -> tuple[Any, ...]:
        threat, k, attack, norm, goal, eps, budget = key
        return (_threat_key(threat), k, norm, goal, _attack_key(attack), eps, budget)

    rows = []
    for key in sorted(groups, key=order):
        threat, k, attack, norm, goal, eps, budget = key
        cs = groups[key]
        won = [c for c in cs if c["success"]]
        qs = [_q_success(c) for c in won]
        linf = [float(c["linf"]) for c in won if c.get("linf") is not None]
        l2 = [float(c["l2"]) for c in won if c.get("l2") is not None]
        rows.append(
            SummaryRow(
                threat=threat,
                k=k,
                attack=attack,
                eps=eps,
                budget=budget,
                n=len(cs),
                successes=len(won),
                mean_queries=statistics.fmean(qs) if qs else None,
                median_queries=float(statistics.median(qs)) if qs else None,
                mean_linf=statistics.fmean(linf) if linf else None,
                mean_l2=statistics.fmean(l2) if l2 else None,
                norm=norm,
                goal=goal,
            )
        )
    return rows


@dataclass(frozen=True)
class PeerRow:
    """One of our attacks against the best baseline at the same grid point (same threat, k,
    norm, goal, ε and budget), both summarised over the cases *both* have finished (same
    image, target and seed), so a partly run grid compares like with like. The best peer has
    the highest success rate, then the lowest median. ``ratio``: our median over the peer's
    (< 1: fewer queries)."""

    ours: SummaryRow
    peer: SummaryRow

    @property
    def ratio(self) -> float | None:
        a, b = self.ours.median_queries, self.peer.median_queries
        return a / b if a is not None and b else None


def versus_peers(cases: Iterable[Case]) -> list[PeerRow]:
    """Our attacks' rows, each with the best baseline of its grid point on the cases both
    finished (where there is one), in report order."""
    from ..attacks import registry

    table = registry.all_attacks()
    by: dict[tuple[Any, ...], dict[str, dict[tuple[Any, ...], Case]]] = defaultdict(dict)
    for c in _done(cases):
        point = (c["threat"], c["k"], c.get("norm") or "linf", _goal(c), c["eps"], c["budget"])
        key = (c.get("image"), c.get("target_id"), c.get("seed"))
        by[point].setdefault(c["attack"], {})[key] = c

    def baseline(attack: str) -> bool:
        info = table.get(attack)
        return info is not None and info.baseline

    def strength(r: SummaryRow) -> tuple[float, float]:
        return (-r.success_rate, r.median_queries if r.median_queries is not None else 1e300)

    out: list[tuple[SummaryRow, SummaryRow]] = []
    for attacks in by.values():
        for name, mine in attacks.items():
            if baseline(name):
                continue
            pairs = []
            for peer, theirs in attacks.items():
                common = [k for k in mine if k in theirs]
                if baseline(peer) and common:
                    (o,) = summarise(mine[k] for k in common)
                    (b,) = summarise(theirs[k] for k in common)
                    pairs.append((o, b))
            if pairs:
                out.append(min(pairs, key=lambda ob: strength(ob[1])))
    out.sort(key=lambda ob: _row_order(ob[0]))
    return [PeerRow(o, b) for o, b in out]


def _row_order(r: SummaryRow) -> tuple[Any, ...]:
    return (_threat_key(r.threat), r.k, r.norm, r.goal, _attack_key(r.attack), r.eps, r.budget)


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


def _success(row: SummaryRow) -> str:
    return f"{row.successes:,}/{row.n:,} ({row.success_rate:.1%})"


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


_Line = tuple[str, int, str, str, str, int]  # threat, k, norm, goal, attack, budget


def _table1(rows: Sequence[SummaryRow]) -> tuple[list[str], list[_T1Row]]:
    """The paper's Table 1 layout: a line per (threat, k, norm, goal, attack, budget), ε as
    column groups, and the paper's row after each threat model it applies to (L∞, targeted)."""
    eps = sorted({r.eps for r in rows})
    lines: dict[_Line, dict[float, SummaryRow]] = defaultdict(dict)
    for r in rows:
        lines[(r.threat, r.k, r.norm, r.goal, r.attack, r.budget)][r.eps] = r
    keys = sorted(
        lines, key=lambda t: (_threat_key(t[0]), t[1], t[2], t[3], _attack_key(t[4]), t[5])
    )
    paper = {p.threat: p for p in PAPER_TABLE1}
    has_paper_eps = any(abs(e - _PAPER_EPS) < 1e-9 for e in eps)
    out: list[_T1Row] = []
    for i, key in enumerate(keys):
        threat, k, norm, goal, attack, budget = key
        by_eps = lines[key]
        cells = []
        for e in eps:
            s = by_eps.get(e)
            cells.append(
                _EMPTY
                if s is None
                else _Cell(_success(s), _queries(s.mean_queries), _queries(s.median_queries))
            )
        label = _threat_label(threat, k, norm, goal)
        out.append(_T1Row(label, attack, _int(budget), tuple(cells)))
        last_of_group = i + 1 == len(keys) or keys[i + 1][:4] != key[:4]
        p = paper.get(threat)
        if (
            last_of_group
            and p
            and has_paper_eps
            and (norm, goal) == ("linf", "targeted")
            and (threat == "ql" or k == _PAPER_K)
        ):
            pcells = tuple(
                _Cell(p.success, _DASH, p.median) if abs(e - _PAPER_EPS) < 1e-9 else _EMPTY
                for e in eps
            )
            out.append(_T1Row(label, _PAPER_LABEL, _DASH, pcells, True))
    return [_eps(e) for e in eps], out
