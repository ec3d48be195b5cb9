"""What `bbattack tune` searches: per attack, the few config fields that decide its query cost,
with ranges around the current defaults (each field is the attack's own frozen config field,
so every point of a space builds a valid attack; tests/tune checks it).

Fields left out on purpose: anything that changes the threat model or the goal (norm, ε), the
budget, and knobs that only matter in corners (noise-start tries, max step halvings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ..errors import UserInputError

__all__ = ["SPACES", "Knob", "search_space", "tunable_attacks"]


class _Trial(Protocol):
    # The part of optuna.Trial a knob uses (optuna is an optional extra: typed structurally).
    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class Knob:
    """One tunable field: a float or int range (``log``: sampled on a log scale) or choices.
    ``goal`` / ``threats``: the field only matters for that goal or those threat models."""

    name: str
    kind: Literal["float", "int", "choice"]
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: int = 1
    choices: tuple[Any, ...] = ()
    goal: Literal["targeted", "untargeted"] | None = None
    threats: tuple[str, ...] = ()

    def applies(self, goal: str, threat: str) -> bool:
        return (self.goal is None or self.goal == goal) and (
            not self.threats or threat in self.threats
        )

    def suggest(self, trial: _Trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=self.step, log=self.log
            )
        return trial.suggest_categorical(self.name, list(self.choices))

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.name} in {{{', '.join(map(str, self.choices))}}}"
        scale = ", log" if self.log else ""
        return f"{self.name} in [{self.low:g}, {self.high:g}{scale}]"


def _f(name: str, low: float, high: float, log: bool = True, **kw: Any) -> Knob:
    return Knob(name, "float", low, high, log=log, **kw)


def _i(name: str, low: int, high: int, log: bool = False, step: int = 1, **kw: Any) -> Knob:
    return Knob(name, "int", low, high, log=log, step=step, **kw)


def _c(name: str, *choices: Any, **kw: Any) -> Knob:
    return Knob(name, "choice", choices=choices, **kw)


# Ranges bracket each attack's current default (square.py, pi_square.py, ...) by roughly an
# order of magnitude, where the field allows it.
SPACES: dict[str, tuple[Knob, ...]] = {
    "square": (
        _f("p_init", 0.005, 0.2, goal="targeted"),
        _c("targeted_loss", "ce", "margin", goal="targeted"),
        _f("p_init_untargeted", 0.01, 0.3, goal="untargeted"),
        _c("untargeted_loss", "margin", "ce", goal="untargeted"),
        _c("min_schedule", 1, 2_000, 5_000, 10_000, 20_000),  # the schedule's floor
    ),
    "pi-square": (
        _f("p_init", 0.005, 0.2),
        _i("delta", 1, 16),
        _i("max_delta", 16, 64),  # never below delta's range: max_delta >= delta always
        _i("patience", 2, 40, log=True),
    ),
    "rays": (_i("tol", 1, 8),),
    "hsj": (
        _i("init_evals", 10, 300, log=True),
        _i("max_evals", 500, 20_000, log=True),
        _f("gamma", 0.1, 100.0),
    ),
    "sign-opt": (
        _i("probes", 20, 400, log=True),
        _f("beta", 1e-4, 1e-2),
        _f("step", 0.02, 2.0),
    ),
    "transfer": (
        _i("iters", 5, 60, log=True),
        _f("step", 0.03, 0.5),
        _f("diversity", 0.0, 1.0, log=False),
        _c("loss", "calib", "logit", "ce"),
        _f("p_init", 0.002, 0.05, threats=("ql",)),
        _i("delta", 1, 16, threats=("pi", "lo")),
    ),
    "ql": (
        _f("sigma", 1e-4, 1e-2),
        _i("samples", 10, 100, step=2),  # even: antithetic pairs
        _f("max_lr", 1e-3, 5e-2),
    ),
}


def tunable_attacks() -> list[str]:
    return sorted(SPACES)


def search_space(attack: str, goal: str, threat: str) -> tuple[Knob, ...]:
    """The knobs of ``attack`` that matter for this goal and threat model; UserInputError for
    an attack without a declared space (a peer's attack, or one with nothing to tune)."""
    knobs = tuple(k for k in SPACES.get(attack, ()) if k.applies(goal, threat))
    if not knobs:
        raise UserInputError(
            f"{attack} has no search space for {goal} {threat}; "
            f"bbattack tune knows {', '.join(tunable_attacks())}"
        )
    return knobs
