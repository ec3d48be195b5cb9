"""Success within query thresholds, per grid point of a bench database: the figures the
issues' goals are stated in ("≥ 90% within 50 queries"), which the report's table (success
within the budget) does not show.

    python benchmarks/within.py benchmarks/results/transfer.sqlite 10 50 500 1000 5000 20000

A case counts as a success within N when it succeeded and its total queries (the final check
included) are at most N. Medians and means are over successful cases.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import sys
from collections import defaultdict


def main(path: str, thresholds: list[int]) -> None:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = db.execute(
        "SELECT attack, threat, k, norm, eps, budget, target_id, params, success, queries "
        "FROM cases WHERE status = 'done' ORDER BY idx"
    ).fetchall()
    groups: dict[tuple[str, ...], list[tuple[bool, int]]] = defaultdict(list)
    for attack, threat, k, norm, eps, budget, target, params, success, queries in rows:
        p = json.loads(params)
        sur = "+".join(p.get("surrogates", [])) or "-"
        rest = {a: b for a, b in p.items() if a != "surrogates"}
        goal = "targeted" if target >= 0 else "untargeted"
        key: tuple[str, ...] = (
            attack, sur, json.dumps(rest) if rest else "", threat, str(k), norm, str(eps),
            str(budget), goal,
        )  # fmt: skip
        groups[key].append((bool(success), int(queries)))
    head = ["attack", "surrogates", "params", "threat", "k", "norm", "eps", "budget", "goal"]
    cols = head + ["cases", "success", "median", "mean"] + [f"≤{t:,}" for t in thresholds]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for group, cases in groups.items():
        ok = [q for s, q in cases if s]
        med = _num(statistics.median(ok)) if ok else "-"
        mean = _num(statistics.mean(ok)) if ok else "-"
        within = [f"{sum(q <= t for q in ok)}/{len(cases)}" for t in thresholds]
        vals = [*group, str(len(cases)), f"{len(ok)}/{len(cases)}", med, mean, *within]
        print("| " + " | ".join(vals) + " |")


def _num(v: float) -> str:
    return f"{v:,.1f}".removesuffix(".0")


if __name__ == "__main__":
    main(sys.argv[1], [int(a) for a in sys.argv[2:]])
