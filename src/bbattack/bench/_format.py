"""Cell formatting shared by the benchmark report's tables, plots and case lists: counts,
query figures, ε, threat-model labels, class names and one case's row."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["CASE_COLUMNS", "Case"]

Case = Mapping[str, Any]
_DASH = "—"


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


def _threat_label(threat: str, k: int, norm: str = "linf", goal: str = "targeted") -> str:
    if threat == "ql":
        base = "QL: full scores"
    elif threat == "pi":
        base = f"PI: top-{k} with scores"
    elif threat == "lo":
        base = f"LO: top-{k} labels"
    else:
        base = f"{threat}, k = {k}"
    # The paper's setting (L∞, targeted) keeps the short label.
    if (norm, goal) == ("linf", "targeted"):
        return base
    return f"{base}, {'L∞' if norm == 'linf' else 'L2'}, {goal}"


def _class(name: str | None, cid: int | None) -> str:
    if cid is not None and cid < 0:
        return "untargeted"
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


CASE_COLUMNS = (
    "idx",
    "attack",
    "threat",
    "k",
    "norm",
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
        "L2" if c.get("norm") == "l2" else "L∞",
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
