"""What a search writes to ``--out``: ``best.toml`` (the best point as an ``[[attacks]]`` block
a grid can use), ``trials.csv`` and ``trials.json`` (every trial: its point, score, successes)
and ``trials.png`` (the score of each trial and the best so far)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..results import write_atomic
from .toml import attack_block
from .trial import TuneSpec, grid_data

__all__ = ["TrialRow", "best_row", "trial_rows", "write_outputs"]


@dataclass(frozen=True)
class TrialRow:
    """One trial as the outputs show it (``score`` None: not complete)."""

    number: int
    state: str
    score: float | None
    mean: float | None
    successes: int | None
    cases: int | None
    params: dict[str, Any]
    retry_of: int | None
    grid: str | None
    defaults: bool = False  # the attack's defaults at the time of the search

    def flat(self, knobs: list[str]) -> dict[str, Any]:
        base = {k: v for k, v in self.__dict__.items() if k != "params"}
        return {**base, **{k: self.params.get(k) for k in knobs}}


def trial_rows(study: Any) -> list[TrialRow]:
    """Every trial of the study, in order (failed and waiting ones too)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        rows.append(
            TrialRow(
                number=t.number,
                state=t.state.name.lower(),
                # The median (the value the sampler saw also carries the mean's tie-break).
                score=a.get("median", t.value) if t.state.name == "COMPLETE" else None,
                mean=a.get("mean"),
                successes=a.get("successes"),
                cases=a.get("cases"),
                params=dict(t.params),
                retry_of=a.get("retry_of"),
                grid=a.get("grid"),
                defaults=bool(a.get("defaults", False)),
            )
        )
    return rows


def best_row(rows: list[TrialRow]) -> TrialRow | None:
    """The lowest median; ties (common: medians sit on a few values) go to the lower mean,
    then the earlier trial: the order the sampler minimises (``Score.objective``)."""
    done = [r for r in rows if r.score is not None]
    if not done:
        return None
    return min(done, key=lambda r: (r.score, r.mean or 0.0, r.number))


def _best_toml(spec: TuneSpec, best: TrialRow, n: int, command: str) -> str:
    attack = grid_data(spec, best.params)["attacks"][0]
    where = f"{len(spec.images)} photo files" if spec.images else f"the {spec.photos} split"
    head = [
        f"# bbattack tune {spec.attack}: trial {best.number}, the best of {n} complete trials,",
        f"# median {best.score:,.1f} queries (failures at the budget), {best.successes}/"
        f"{best.cases} succeeded, on {where}; tuned {datetime.now(UTC):%Y-%m-%d}.",
        f"# {command}" if command else "# (command not recorded)",
        "# Paste into a grid's attacks; measure it on the held-out split "
        "(benchmarks/heldout.toml).",
    ]
    return "\n".join(head) + "\n" + attack_block(attack)


def _csv(rows: list[TrialRow], knobs: list[str]) -> str:
    buf = io.StringIO()
    fields = [
        "number", "state", "score", "mean", "successes", "cases", *knobs, "retry_of", "grid",
        "defaults",
    ]  # fmt: skip
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r.flat(knobs))
    return buf.getvalue()


def _plot(rows: list[TrialRow], spec: TuneSpec, path: Path) -> None:
    from matplotlib.figure import Figure

    done = [r for r in rows if r.score is not None]
    scores = [float(r.score or 0.0) for r in done]
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter([r.number for r in done], scores, s=18, label="median")
    ax.scatter([r.number for r in done], [r.mean or 0.0 for r in done], s=18, marker="x",
               color="C2", label="mean")  # fmt: skip
    best, running = float("inf"), []
    for v in scores:
        best = min(best, v)
        running.append(best)
    ax.step([r.number for r in done], running, where="post", color="C1", label="best median")
    for r in done:
        if r.defaults:
            ax.annotate("defaults", (r.number, float(r.score or 0.0)), fontsize=7,
                        textcoords="offset points", xytext=(4, 4))  # fmt: skip
    if any((r.successes or 0) < (r.cases or 0) for r in done):
        ax.axhline(spec.budget, color="grey", lw=0.8, ls=":", label="budget")
    ax.set_yscale("log")  # medians of a few queries and means of hundreds, on one axis
    ax.set_xlabel("trial")
    ax.set_ylabel("queries (failures at the budget)")
    ax.set_title(f"bbattack tune {spec.attack} ({spec.goal}, {spec.threat})", fontsize=10)
    ax.legend(fontsize=8)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    tmp.replace(path)


def write_outputs(study: Any, spec: TuneSpec, knobs: list[str], out: Path, command: str) -> Path:
    """Write the four outputs; returns best.toml's path (not written before a complete trial)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study)
    write_atomic(out / "trials.csv", _csv(rows, knobs))
    table = {
        "search": json.loads(spec.key()),
        "trials": [r.__dict__ for r in rows],
    }
    write_atomic(out / "trials.json", json.dumps(table, indent=2) + "\n")
    _plot(rows, spec, out / "trials.png")
    best = best_row(rows)
    if best is not None:
        n = sum(r.score is not None for r in rows)
        write_atomic(out / "best.toml", _best_toml(spec, best, n, command))
    return out / "best.toml"
