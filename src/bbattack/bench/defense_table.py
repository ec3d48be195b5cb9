"""What a model owner reads in a bench report: one row per defence and attack.

A defended case is paired with the same attack's undefended case on the same image, target,
seed and parameters (a grid's ``defense = ["none", ...]`` axis gives both), so that each
row says how soon the defence caught the attack, against how many queries the attack needs
when nothing is in front of the target, and what it did to the attack's success.

False positives come from benign traffic, not from the grid: ``benign`` maps a defence
stack (as :func:`bbattack.bench.config.defense_stack` spells it) to its flagged share, as
``benchmarks/defense_fpr.py --json`` measures it.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._format import Case, _queries, _threat_label
from .summary import defense_label, with_surrogate_labels

__all__ = [
    "DEFENSE_HEADER",
    "DEFENSE_NOTE",
    "DefenseRow",
    "benign_rates",
    "defense_cells",
    "defense_rows",
]


@dataclass(frozen=True)
class DefenseRow:
    """One defence stack against one attack at one grid point, over its finished cases."""

    defense: str
    attack: str
    threat: str
    n: int
    detected: int  # cases with at least one refused or flagged query
    median_first_detection: float | None  # query number of the first refusal or flag
    median_share_of_undefended: float | None  # that over the undefended run's queries
    successes: int
    undefended_n: int  # paired undefended cases
    undefended_successes: int
    rejected: int  # queries refused, over every case
    queries: int  # queries paid, over every case
    banned: int
    benign_fpr: float | None = None


def _stack(c: Case) -> list[dict[str, Any]]:
    p = c.get("params")
    return list(p.get("defense") or []) if isinstance(p, dict) else []


def _pair_key(c: Case) -> str:
    # Everything that makes a case but its defence: the undefended twin has the same key.
    p = c.get("params") if isinstance(c.get("params"), dict) else {}
    rest = {k: v for k, v in (p or {}).items() if k != "defense"}
    fields = ("attack", "threat", "k", "norm", "eps", "budget", "image", "target_id", "seed")
    return json.dumps([[c.get(f) for f in fields], rest], sort_keys=True, default=str)


def _first_detection(c: Case) -> int | None:
    d = (c.get("provenance") or {}).get("defense") or {}
    hits = [d.get("first_rejected_at"), d.get("first_flagged_at")]
    found = [int(h) for h in hits if h is not None]
    return min(found) if found else None


def _row_key(c: Case, target: str | None) -> tuple[str, str, str]:
    norm = c.get("norm") or "linf"
    goal = "untargeted" if int(c.get("target_id", 0)) < 0 else "targeted"
    # The attack as the report's other tables name it, its other parameters included.
    p = c.get("params") if isinstance(c.get("params"), dict) else {}
    rest = {k: v for k, v in (p or {}).items() if k != "defense"}
    attack = str(with_surrogate_labels([{**c, "params": rest}], target)[0]["attack"])
    return (defense_label(_stack(c)), attack, _threat_label(c["threat"], c["k"], norm, goal))


def defense_rows(
    cases: Iterable[Case],
    benign: Mapping[str, float] | None = None,
    target: str | None = None,
) -> list[DefenseRow]:
    """One row per (defence, attack, threat model) over finished defended cases; nothing
    when the grid has no defence. ``cases`` as the database gives them (attack names not yet
    labelled). ``benign``: flagged share of benign traffic per stack; ``target``: the target
    model, for the "same family" mark of surrogates."""
    done = [c for c in cases if c.get("success") is not None]
    plain = {_pair_key(c): c for c in done if not _stack(c)}
    groups: dict[tuple[str, str, str], list[Case]] = defaultdict(list)
    for c in done:
        if _stack(c):
            groups[_row_key(c, target)].append(c)
    fpr = {defense_label(json.loads(k)): v for k, v in (benign or {}).items()}
    return [_row(key, cs, plain, fpr.get(key[0])) for key, cs in sorted(groups.items())]


def _row(
    key: tuple[str, str, str], cs: Sequence[Case], plain: Mapping[str, Case], fpr: float | None
) -> DefenseRow:
    firsts = [(c, f) for c in cs if (f := _first_detection(c)) is not None]
    twins = [t for c in cs if (t := plain.get(_pair_key(c))) is not None]
    shares = []
    for c, f in firsts:
        t = plain.get(_pair_key(c))
        if t is not None and t.get("queries"):
            need = t.get("queries_at_success") or t["queries"]
            shares.append(f / int(need))
    blocks = [(c.get("provenance") or {}).get("defense") or {} for c in cs]
    return DefenseRow(
        defense=key[0],
        attack=key[1],
        threat=key[2],
        n=len(cs),
        detected=len(firsts),
        median_first_detection=statistics.median(f for _, f in firsts) if firsts else None,
        median_share_of_undefended=statistics.median(shares) if shares else None,
        successes=sum(bool(c["success"]) for c in cs),
        undefended_n=len(twins),
        undefended_successes=sum(bool(t["success"]) for t in twins),
        rejected=sum(int(b.get("rejected") or 0) for b in blocks),
        queries=sum(int(c.get("queries") or 0) for c in cs),
        banned=sum(bool(b.get("banned")) for b in blocks),
        benign_fpr=fpr,
    )


def benign_rates(raw: Mapping[str, Any], source: str = "benign") -> dict[str, float]:
    """``benchmarks/defense_fpr.py --json``'s figures as {stack JSON: flagged share}: each
    detector's ``spec`` spelled as a grid's defence entry. A file of another shape is a
    UserInputError naming ``source``."""
    from ..errors import UserInputError
    from .config import defense_stack

    detectors = raw.get("detectors")
    if not isinstance(detectors, dict) or not detectors:
        raise UserInputError(f"{source}: no 'detectors' table (benchmarks/defense_fpr.py --json)")
    out = {}
    for name, d in detectors.items():
        rate = d.get("fpr_without_resubmissions") if isinstance(d, dict) else None
        spec = d.get("spec") if isinstance(d, dict) else None
        if not isinstance(spec, str) or not isinstance(rate, int | float) or isinstance(rate, bool):
            raise UserInputError(
                f"{source}: detector {name!r} needs a 'spec' and a numeric "
                "'fpr_without_resubmissions'"
            )
        try:
            key = json.dumps(defense_stack(spec), sort_keys=True)
        except UserInputError as e:
            raise UserInputError(f"{source}: detector {name!r}: {e}") from None
        out[key] = float(rate)
    return out


def _pct(part: float, whole: float) -> str:
    return "—" if not whole else f"{100 * part / whole:.1f}%"


DEFENSE_NOTE = (
    "Detected: cases with at least one refused or flagged query. First detection: the query "
    "number of the first refusal or flag. Share of undefended queries: that over the queries "
    "the same attack needed on the same case with no defence (to its success, or its budget). "
    "Queries refused: paid queries the defence refused, over every case (share of all paid "
    "queries). Benign FPR: the flagged share of benign traffic without exact resubmissions "
    "(`benchmarks/defense_fpr.py --json`, given to `bbattack report --benign`)."
)
DEFENSE_HEADER = (
    "defence",
    "attack",
    "threat model",
    "detected",
    "first detection (median)",
    "share of undefended queries",
    "success",
    "success undefended",
    "queries refused",
    "keys banned",
    "benign FPR",
)


def defense_cells(rows: Sequence[DefenseRow]) -> list[list[str]]:
    """Each row's cells under :data:`DEFENSE_HEADER` (plain text, not escaped)."""
    body = []
    for r in rows:
        share = r.median_share_of_undefended
        body.append(
            [
                r.defense,
                r.attack,
                r.threat,
                f"{r.detected}/{r.n}",
                _queries(r.median_first_detection),
                "—" if share is None else f"{100 * share:.1f}%",
                f"{r.successes}/{r.n}",
                f"{r.undefended_successes}/{r.undefended_n}" if r.undefended_n else "—",
                f"{r.rejected:,} ({_pct(r.rejected, r.queries)})",
                f"{r.banned}/{r.n}",
                "—" if r.benign_fpr is None else f"{100 * r.benign_fpr:.2f}%",
            ]
        )
    return body
