"""`bbattack tune ATTACK`: a hyperparameter search (Optuna, extra ``tune``) over an attack's
declared knobs (:mod:`.space`), each trial a bench grid on the tuning photos (:mod:`.trial`),
resumable from its SQLite study (:mod:`.study`), with its best point and trial table written
out (:mod:`.report`)."""

from .report import best_row, trial_rows, write_outputs
from .space import SPACES, Knob, search_space, tunable_attacks
from .study import search
from .trial import Score, TuneSpec, evaluate, grid_data, score_cases

__all__ = [
    "SPACES",
    "Knob",
    "Score",
    "TuneSpec",
    "best_row",
    "evaluate",
    "grid_data",
    "score_cases",
    "search",
    "search_space",
    "trial_rows",
    "tunable_attacks",
    "write_outputs",
]
