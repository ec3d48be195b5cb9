"""`bbattack tune ATTACK`: search an attack's hyperparameters on the tuning photos (Optuna),
each trial a bench grid; writes the best config and the trial table. (The batch-size
measurement that used to be `bbattack tune` is `bbattack batch-size`.)"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import UserInputError
from . import _common
from ._common import SEED_MAX, BackendOpt, Threat, app, err, guard, out

if TYPE_CHECKING:
    from ..tune import Score, TuneSpec

__all__ = ["tune"]


class Photos(StrEnum):
    tuning = "tuning"
    heldout = "heldout"


class Goal(StrEnum):
    targeted = "targeted"
    untargeted = "untargeted"


class NormOpt(StrEnum):
    linf = "linf"
    l2 = "l2"


def _natural_threat(attack: str) -> str:
    from ..attacks import registry

    first = registry.get(attack).views[0]
    return next(t for t, v in registry.THREAT_VIEWS.items() if v == first)


class _Lines:
    """What a search says on stderr: the search, a resume, one line per trial."""

    def __init__(self, spec: TuneSpec, knobs: list[str], trials: int, quiet: bool) -> None:
        self.spec, self.knobs, self.trials, self.quiet = spec, knobs, trials, quiet

    def _say(self, text: str) -> None:
        err.print(text, markup=False, highlight=False, soft_wrap=True)

    def resume(self, done: int, requeued: list[int]) -> None:
        if not self.quiet:
            self._say(f"tuning {self.spec.describe()}; knobs: {', '.join(self.knobs)}")
        if done or requeued:
            again = f"; trials {requeued} were cut off and run again" if requeued else ""
            self._say(f"resuming: {done}/{self.trials} trials complete{again}")

    def trial(self, number: int, params: dict[str, Any], s: Score) -> None:
        if not self.quiet:
            point = ", ".join(f"{key}={v}" for key, v in params.items())
            self._say(
                f"trial {number}: median {s.median:,.1f} queries, "
                f"{s.successes}/{s.cases} succeeded; {point}"
            )


def _images(paths: list[Path]) -> tuple[str, ...]:
    for p in paths:
        if not p.expanduser().is_file():
            raise UserInputError(f"--images: {p} is not a file")
    return tuple(str(p.expanduser().resolve()) for p in paths)


# The options, one alias each (the command's signature stays one line per option).
AttackArg = Annotated[str, typer.Argument(help="the attack to tune (bbattack attacks)")]
PhotosOpt = Annotated[
    Photos, typer.Option(help="the photo split: tuning (defaults are chosen here)")
]
AllowOpt = Annotated[
    bool, typer.Option(help="allow --photos heldout (a check, never to pick a default)")
]
ImagesOpt = Annotated[
    list[Path] | None,
    typer.Option("--images", help="your own photo files instead of a split (repeatable)"),
]
ThreatOpt = Annotated[Threat | None, typer.Option(help="threat model (default: the attack's own)")]
GoalOpt = Annotated[Goal | None, typer.Option(help="default: targeted where it can")]
NormArg = Annotated[NormOpt, typer.Option(help="the ball's norm")]
EpsOpt = Annotated[float, typer.Option(help="the ball's radius in [0, 1] pixel units")]
KOpt = Annotated[int, typer.Option(help="labels revealed per query (pi, lo)")]
BudgetOpt = Annotated[int, typer.Option(help="queries per case")]
TrialsOpt = Annotated[int, typer.Option(help="complete trials the study should hold")]
LimitOpt = Annotated[int | None, typer.Option(help="use the first N qualifying photos")]
ConfidenceOpt = Annotated[
    float, typer.Option(help="an unlabelled photo qualifies at this top-1 probability")
]
ModelOpt = Annotated[str, typer.Option(help="target model spec")]
BackendArg = Annotated[BackendOpt, typer.Option(help="inference backend")]
SurrogateOpt = Annotated[
    list[str] | None, typer.Option("--surrogate", help="surrogate models (transfer)")
]
StudyOpt = Annotated[
    Path | None, typer.Option(help="SQLite study (default OUT/study.sqlite); rerun to resume")
]
SeedOpt = Annotated[int, typer.Option(help="the sampler's seed (same seed, same trials)")]
OutOpt = Annotated[Path, typer.Option("--out", help="where the outputs go")]
WorkersOpt = Annotated[int, typer.Option(help="local worker processes per trial")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no per-trial lines")]


@app.command()
def tune(
    attack: AttackArg,
    photos: PhotosOpt = Photos.tuning,
    allow_heldout: AllowOpt = False,
    images: ImagesOpt = None,
    threat: ThreatOpt = None,
    goal: GoalOpt = None,
    norm: NormArg = NormOpt.linf,
    eps: EpsOpt = 0.05,
    k: KOpt = 1,
    budget: BudgetOpt = 10_000,
    trials: TrialsOpt = 20,
    limit: LimitOpt = None,
    min_confidence: ConfidenceOpt = 0.5,
    model: ModelOpt = "efficientnet-lite0",
    backend: BackendArg = BackendOpt.auto,
    surrogate: SurrogateOpt = None,
    study: StudyOpt = None,
    seed: SeedOpt = 0,
    out_dir: OutOpt = Path("tune-out"),
    workers: WorkersOpt = 1,
    quiet: QuietOpt = False,
) -> None:
    """Search ATTACK's hyperparameters: objective = median queries (failures at the budget,
    ties broken by the mean) over the tuning split's cases, each trial a bench grid under the
    bench's own oracle; the first trial is the attack's defaults. Writes OUT/best.toml (the
    best point as a grid's attacks entry), trials.csv, trials.json and trials.png."""

    def go() -> None:
        from ..attacks import registry
        from ..tune import TuneSpec

        info = registry.get(attack)  # an unknown attack: one line
        if photos is Photos.heldout and not allow_heldout and not images:
            raise UserInputError(
                "--photos heldout: defaults are never chosen on the held-out photos "
                "(pass --allow-heldout for a check after the fact)"
            )
        if not 0 <= seed <= SEED_MAX:
            raise UserInputError(f"--seed must be in [0, {SEED_MAX}]")
        if workers < 1:
            raise UserInputError(f"--workers must be >= 1, got {workers}")
        spec = TuneSpec(
            attack=attack,
            threat=threat.value if threat is not None else _natural_threat(attack),
            goal=(goal.value if goal else "targeted" if info.targeted else "untargeted"),
            budget=budget,
            norm=norm.value,
            eps=eps,
            k=k,
            model=model,
            backend=backend.value,
            photos=photos.value,
            images=_images(images or []),
            limit=limit,
            min_confidence=min_confidence,
            surrogates=tuple(surrogate or ()),
            workers=workers,
        )
        _search(spec, trials, study, out_dir, seed, quiet)

    guard(go)


def _search(
    spec: TuneSpec, trials: int, study: Path | None, out_dir: Path, seed: int, quiet: bool
) -> None:
    """Run (or resume) the search and write its outputs; Ctrl-C keeps every trial."""
    from ..tune import search, search_space, write_outputs

    knobs = [kn.name for kn in search_space(spec.attack, spec.goal, spec.threat)]
    study_path = study if study is not None else out_dir / "study.sqlite"

    lines = _Lines(spec, knobs, trials, quiet)

    try:
        st = search(
            spec,
            trials=trials,
            study_path=study_path,
            grids=out_dir / "grids",
            seed=seed,
            on_resume=lines.resume,
            on_trial=lines.trial,
            make_parent=study is None,
        )
    except KeyboardInterrupt:
        err.print(
            f"interrupted; the study in {study_path} keeps every trial: run the same "
            "command again to resume",
            markup=False,
        )
        raise typer.Exit(130) from None
    command = " ".join(["bbattack", *(_common.ARGV or [])])
    best = write_outputs(st, spec, knobs, out_dir, command)
    out.print(
        f"best config: {best}; trials: {out_dir / 'trials.csv'}, {out_dir / 'trials.png'}",
        markup=False,
        highlight=False,
    )
