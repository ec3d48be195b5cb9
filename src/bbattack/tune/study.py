"""The search: an Optuna study (TPE, seeded) in an SQLite file, one trial per point of the
attack's search space, each scored by a bench grid (:mod:`.trial`).

Resuming: the study file holds every trial. One `bbattack tune` per study at a time (a lock
file beside it), so a trial still marked running when a search starts was cut off (a kill, a
crash, Ctrl-C): it is marked failed and its point is queued again, where its grid's database
resumes the cases it had finished. ``trials`` counts complete trials: rerunning the same
command finishes a search; a larger ``trials`` extends it."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import UserInputError
from .space import Knob, search_space
from .trial import Score, TuneSpec, check, evaluate

__all__ = ["STUDY_NAME", "import_optuna", "open_study", "search"]

STUDY_NAME = "bbattack-tune"


def import_optuna() -> ModuleType:
    """Optuna, or one line saying how to install it (before anything runs)."""
    try:
        import optuna
    except ImportError:
        raise UserInputError("bbattack tune needs Optuna: pip install 'bbattack[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@contextmanager
def _locked(study: Path) -> Iterator[None]:
    """An exclusive lock on ``<study>.lock``: a second search on the same study is refused
    (it would take the first one's running trial for a cut-off one)."""
    lock = study.with_name(study.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserInputError(
                f"another `bbattack tune` is running on {study}; wait for it or stop it"
            ) from None
        yield
    finally:
        os.close(fd)


def open_study(optuna: ModuleType, path: Path, spec: TuneSpec, seed: int) -> Any:
    """Create or load the study in ``path``; refuse one that holds another search. The
    sampler is seeded by ``seed`` and the trials already held: the same seed and history give
    the same next trials."""
    sampler = optuna.samplers.TPESampler(seed=seed)
    try:
        study = optuna.create_study(
            study_name=STUDY_NAME,
            storage=f"sqlite:///{path}",
            load_if_exists=True,
            direction="minimize",
            sampler=sampler,
        )
    except Exception as e:  # noqa: BLE001 - a user's file: SQLAlchemy and Optuna errors alike
        raise UserInputError(f"--study {path}: not an Optuna study ({type(e).__name__})") from None
    if n := len(study.trials):
        # A resumed search re-seeded with `seed` alone would draw its first points again.
        resumed = int(np.random.SeedSequence([seed, n]).generate_state(1)[0])
        study.sampler = optuna.samplers.TPESampler(seed=resumed)
    saved = study.user_attrs.get("search")
    if saved is None:
        study.set_user_attr("search", spec.key())
    elif saved != spec.key():
        raise UserInputError(f"--study {path} holds another search ({saved}); use another --study")
    return study


def _requeue_cut_off(optuna: ModuleType, study: Any) -> list[int]:
    """Trials left running by a search that was cut off: failed, and their points queued."""
    running = optuna.trial.TrialState.RUNNING
    cut = study.get_trials(deepcopy=False, states=(running,))
    for t in cut:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        keep = {k: v for k, v in t.user_attrs.items() if k == "defaults"}
        study.enqueue_trial(dict(t.params), user_attrs={**keep, "retry_of": t.number})
    return [t.number for t in cut]


def complete_trials(optuna: ModuleType, study: Any) -> list[Any]:
    return list(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def search(
    spec: TuneSpec,
    *,
    trials: int,
    study_path: Path,
    grids: Path,
    seed: int = 0,
    on_resume: Callable[[int, list[int]], None] | None = None,
    on_trial: Callable[[int, dict[str, Any], Score], None] | None = None,
    on_case: Callable[..., None] | None = None,
    make_parent: bool = False,
) -> Any:
    """Run (or resume) the search until the study holds ``trials`` complete trials; returns
    the study. Everything a user can get wrong is refused before the first query (and before
    ``make_parent`` creates the study's folder)."""
    knobs: tuple[Knob, ...] = search_space(spec.attack, spec.goal, spec.threat)
    if trials < 1:
        raise UserInputError(f"--trials must be >= 1, got {trials}")
    check(spec)
    optuna = import_optuna()
    if make_parent:
        study_path.parent.mkdir(parents=True, exist_ok=True)
    if not study_path.parent.is_dir():
        raise UserInputError(f"--study: {study_path.parent} is not a directory")
    with _locked(study_path):
        study = open_study(optuna, study_path, spec, seed)
        if not study.trials:
            _enqueue_defaults(study, spec, knobs)
        requeued = _requeue_cut_off(optuna, study)
        if on_resume is not None:
            on_resume(len(complete_trials(optuna, study)), requeued)
        while len(complete_trials(optuna, study)) < trials:
            trial = study.ask()
            params = {k.name: k.suggest(trial) for k in knobs}
            # An exception (or a kill) here leaves the trial running: the next search
            # queues its point again.
            score = evaluate(spec, params, grids, on_case)
            for key, v in score.attrs().items():
                trial.set_user_attr(key, v)
            study.tell(trial, score.objective(spec.budget))
            if on_trial is not None:
                on_trial(trial.number, params, score)
    return study


def _enqueue_defaults(study: Any, spec: TuneSpec, knobs: tuple[Knob, ...]) -> None:
    """A new study's first trial is the attack's current defaults, so the search is compared
    with them on the same cases."""
    from ..attacks.registry import build

    config = build(spec.attack, norm=spec.norm).config
    params = {k.name: getattr(config, k.name, None) for k in knobs}
    if all(v is not None for v in params.values()):
        study.enqueue_trial(params, user_attrs={"defaults": True})
