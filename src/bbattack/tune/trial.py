"""One trial of `bbattack tune`: the attack with one point of its search space, run as a bench
grid over the tuning photos (the bench's own code path: `run_bench`, the same oracle, case ids
and seeds as `bbattack bench`), scored by the median queries with failures counted at the
budget.

Each trial's grid lives in ``<out>/grids/<config hash>.toml`` with its database beside it, so
a trial killed part-way resumes its finished cases and checkpoints, and a point evaluated
twice costs nothing the second time."""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..bench.config import parse_config
from ..errors import UserInputError
from ..results import write_atomic
from .toml import dumps

__all__ = ["Score", "TuneSpec", "evaluate", "grid_data", "score_cases"]

Split = Literal["tuning", "heldout"]


@dataclass(frozen=True)
class TuneSpec:
    """What a search is about: one attack under one threat model, goal, ball and budget, on
    one set of photos and one target model. ``images``: the user's own photo files instead of
    a split (absolute paths)."""

    attack: str
    threat: str
    goal: Literal["targeted", "untargeted"]
    budget: int
    norm: str = "linf"
    eps: float = 0.05
    k: int = 1
    model: str = "efficientnet-lite0"
    backend: Literal["auto", "torch", "onnx"] = "auto"
    photos: Split = "tuning"
    images: tuple[str, ...] = ()
    limit: int | None = None
    min_confidence: float = 0.5
    seeds: tuple[int, ...] = (0,)
    surrogates: tuple[str, ...] = ()
    workers: int = field(default=1, compare=False)  # where it runs, not what it measures

    def key(self) -> str:
        """The search's identity (what a resumed study must match); workers left out."""
        d = asdict(self)
        d.pop("workers")
        return json.dumps(d, sort_keys=True)

    def describe(self) -> str:
        where = f"{len(self.images)} photo files" if self.images else f"the {self.photos} split"
        return (
            f"{self.attack} {self.goal} {self.threat}"
            + (f" k={self.k}" if self.threat != "ql" else "")
            + f" {self.norm} eps={self.eps:g}, budget {self.budget:,}, {self.model}, {where}"
        )


def grid_data(spec: TuneSpec, params: dict[str, Any]) -> dict[str, Any]:
    """The bench grid of one trial: the spec's cases with the attack's ``params``."""
    images: dict[str, Any]
    if spec.images:
        images = {"paths": list(spec.images)}
    else:
        images = {"split": spec.photos, "min_confidence": spec.min_confidence}
    if spec.limit is not None:
        images["limit"] = spec.limit
    attack: dict[str, Any] = {
        "name": spec.attack,
        "threat": [spec.threat],
        "k": [spec.k],
        "norm": [spec.norm],
        "eps": [spec.eps],
        "budget": [spec.budget],
        "goal": [spec.goal],
        "params": dict(sorted(params.items())),
    }
    if spec.surrogates:
        attack["surrogates"] = list(spec.surrogates)
    return {
        "name": f"tune-{spec.attack}",
        "seed": 0,
        "seeds": list(spec.seeds),
        "model": {"name": spec.model, "backend": spec.backend},
        "images": images,
        # Targets from the other photos' clean classes, as heldout.toml (and start images for
        # PI/LO); an untargeted grid draws none, and "classes" needs no two distinct photos.
        "targets": {"pool": "images" if spec.goal == "targeted" else "classes", "per_image": 1},
        "attacks": [attack],
    }


# A grid field's error, said with the tune option that sets it.
_FLAGS = {"budget": "--budget", "goal": "--goal", "threat": "--threat", "norm": "--norm",
          "eps": "--eps", "k": "--k", "surrogates": "--surrogate", "name": "ATTACK",
          "limit": "--limit", "min_confidence": "--min-confidence"}  # fmt: skip


def check(spec: TuneSpec) -> None:
    """Validate the spec's grid (attack, view, norm, budget, surrogates) before any query."""
    try:
        parse_config(grid_data(spec, {}))
    except UserInputError as e:
        m = re.match(r"(?:attacks\[0\]|images)\.(\w+)(\S*): ", str(e))
        if m is None or m.group(1) not in _FLAGS:
            raise
        raise UserInputError(f"{_FLAGS[m.group(1)]}: {str(e)[m.end() :]}") from None


@dataclass(frozen=True)
class Score:
    """A trial's result: ``median`` (the objective), over ``cases`` cases, failures at the
    budget; ``mean`` alike; ``successes``; ``grid``: the trial grid's config hash."""

    median: float
    mean: float
    successes: int
    cases: int
    grid: str

    def attrs(self) -> dict[str, Any]:
        return asdict(self)

    def objective(self, budget: int) -> float:
        """What the sampler minimises: the median, ties broken by the mean (which adds less
        than a quarter query, below the half-query steps a median moves in): on easy cases
        many points share a median of a few queries, and the mean still tells them apart."""
        return self.median + self.mean / (4.0 * max(budget, 1))


def score_cases(cases: Sequence[dict[str, Any]], grid: str = "") -> Score:
    """Score finished bench cases: a success counts its queries at success, a failure (or a
    clean image already in the goal) the case's budget."""
    if not cases:
        raise UserInputError("the trial's grid has no finished case to score")
    qs = [
        float(c["queries_at_success"] if c["queries_at_success"] is not None else c["queries"])
        if c["success"]
        else float(c["budget"])
        for c in cases
    ]
    return Score(
        median=float(statistics.median(qs)),
        mean=statistics.fmean(qs),
        successes=sum(bool(c["success"]) for c in cases),
        cases=len(cases),
        grid=grid,
    )


def evaluate(
    spec: TuneSpec,
    params: dict[str, Any],
    grids: Path,
    on_case: Callable[..., None] | None = None,
) -> Score:
    """Run (or resume) the trial grid for ``params`` under ``grids/`` and score it."""
    from ..bench import BenchDB, run_bench

    data = grid_data(spec, params)
    digest = parse_config(data).digest()
    grids.mkdir(parents=True, exist_ok=True)
    config = grids / f"{digest}.toml"
    write_atomic(config, dumps(data, header=f"bbattack tune trial grid: {spec.describe()}"))
    db = grids / f"{digest}.sqlite"
    summary = run_bench(config, db, workers=spec.workers, on_case=on_case)
    if summary.done != summary.total:
        raise UserInputError(f"{db}: {summary.total - summary.done} cases were left pending")
    with BenchDB.open(db, create=False, read_only=True) as ro:
        cases = ro.cases("done")
    return score_cases(cases, digest)
