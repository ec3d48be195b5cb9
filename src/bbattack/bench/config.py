"""Benchmark grids: a TOML file, validated into a frozen config, expanded into cases.

    name = "table1"
    seed = 0                      # draws the targets
    seeds = [0]                   # attack seeds: one case per seed
    [model]
    name = "efficientnet-lite0"   # a model spec: a built-in, "net.onnx", "net.pt", an HF dir or
                                  #   "pkg.mod:fn"; a file's preprocessing beside it (input_size,
                                  #   mean, std, labels, ...: bbattack.targets.spec)
    backend = "auto"
    [images]
    photos = ["coffee", "chelsea"]  # bundled photos by name, or "all"
    paths = ["my.png"]              # files, relative to the config file
    # or split = "tuning" | "heldout" alone: the project's fixed photo splits, never mixed
    #   (benchmarks/README-sets.md); sets, min_confidence and limit as for package sets
    [targets]
    pool = "images"               # "classes": uniform over all classes; "images": the clean
    per_image = 1                 #   classes of the other images (which serve as start images)
    [[attacks]]
    name = "ql"                   # any attack in `bbattack attacks` (ours or a baseline)
    threat = ["ql"]               # views: ql (scores), pi (top-k + scores), lo (top-k labels)
    k = [1]
    norm = ["linf"]               # linf and/or l2 (each attack declares what it supports)
    eps = [0.05]                  # radii in [0, 1] pixel units, for every norm listed
    budget = [10000]              # queries per case, at most 10,000,000
    goal = ["targeted"]           # targeted and/or untargeted (one untargeted case per image)
    seeds = [0, 1]                # optional: this attack's seeds instead of the grid's
    params = { samples = 50 }     # the attack's hyperparameters (validated)
    adaptive = true               # optional: the attack's adaptive version (square ->
                                  #   adaptive-square, ql -> adaptive-ql), as --adaptive

Every error names the field it comes from (``attacks[1].params.lr: ...``).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..attacks import registry
from ..attacks.balls import NORMS, Norm, make_ball
from ..errors import UserInputError
from ..oracle import View
from ..oracle.views import threat_view
from ._sections import ImagesSpec, ModelSpec, Real, TargetsSpec, Whole, _Frozen, _spec_text

__all__ = [
    "AttackSpec",
    "BenchConfig",
    "ImagesSpec",
    "ModelSpec",
    "TargetsSpec",
    "attack_class",
    "load_config",
    "make_view",
]

Threat = Literal["ql", "pi", "lo"]
Goal = Literal["targeted", "untargeted"]
# Per case: ~19 h at 150 queries/s, past the paper's LO median (2.7M); more is a typo.
MAX_BUDGET = 10_000_000


def attack_class(name: str) -> Any:
    """Our attacks and the wrapped baselines, by name (from the registry)."""
    return registry.get(name).cls


def make_view(threat: str, k: int) -> View:
    return threat_view(threat, k)


def defense_stack(spec: str) -> list[dict[str, Any]]:
    """A bench grid's defence entry as its stack of layers, each with every parameter (what
    ``bbattack.defenses.from_config`` builds): ``none`` is no defence, ``+`` stacks layers."""
    from ..defenses import build, parse_spec

    if spec.strip().lower() == "none":
        return []
    return [build(parse_spec(part)).describe() for part in spec.split("+")]


class AttackSpec(_Frozen):
    name: str
    threat: list[Threat] | None = Field(None, min_length=1)
    k: list[Whole] = Field(default_factory=lambda: [1], min_length=1)
    norm: list[Norm] = Field(default_factory=lambda: list(NORMS[:1]), min_length=1)
    eps: list[Real] = Field(default_factory=lambda: [0.05], min_length=1)
    budget: list[Whole] = Field(min_length=1)
    goal: list[Goal] = Field(default_factory=lambda: ["targeted"], min_length=1)  # type: ignore[arg-type]
    seeds: list[Whole] | None = Field(None, min_length=1, description="overrides the grid's")
    params: dict[str, Any] = Field(default_factory=dict)
    surrogates: list[str] = Field(
        default_factory=list,
        description="built-in models (lite0, lite1, lite2, squeezenet), 'module:function' "
        "factories, or 'all' (every built-in model except the target); surrogate-guided "
        "attacks only",
    )
    defense: list[str] = Field(
        default_factory=list,
        description="an axis of defences in front of the target, one case per entry: "
        "bbattack.defenses specs ('blacklight', 'piha:action=reject'), layers stacked with "
        "'+' (outermost first), 'none' for no defence",
    )

    @model_validator(mode="before")
    @classmethod
    def _adaptive(cls, data: Any) -> Any:
        """``adaptive = true`` names the attack's adaptive version: the same grid as naming it
        (and the same cases), so it leaves no field of its own."""
        if not isinstance(data, dict) or "adaptive" not in data:
            return data
        data = dict(data)
        on = data.pop("adaptive")
        if not isinstance(on, bool):
            raise ValueError("adaptive must be true or false")
        if on and isinstance(data.get("name"), str):
            try:
                data["name"] = registry.adaptive_of(registry.get(data["name"])).name
            except UserInputError as e:
                raise ValueError(f"adaptive = true: {e}") from None
        return data

    @field_validator("defense")
    @classmethod
    def _defense(cls, v: list[str]) -> list[str]:
        stacks = []
        for i, s in enumerate(v):
            try:
                stacks.append(json.dumps(defense_stack(s), sort_keys=True))
            except UserInputError as e:
                raise ValueError(f"[{i}] {e}") from None
        if len(set(stacks)) != len(stacks):
            raise ValueError("a defence is listed twice")
        return v

    def defenses(self) -> list[list[dict[str, Any]]]:
        """The defence axis: each entry's stack, every parameter spelled out ([]: none)."""
        return [defense_stack(s) for s in self.defense] or [[]]

    @field_validator("surrogates")
    @classmethod
    def _surrogates(cls, v: list[str], info: ValidationInfo) -> list[str]:
        from ..targets.spec import builtin_name

        for i, s in enumerate(list(v)):
            try:  # a file: its absolute path, so that workers find it
                v[i] = s if s == "all" or builtin_name(s) else _spec_text(s, info)
            except ValueError as e:
                raise ValueError(f"[{i}] {e}") from None
        if len(set(v)) != len(v):
            raise ValueError("a surrogate is listed twice")
        return v

    def surrogate_names(self, target: str | None) -> list[str]:
        """The surrogates, with 'all' spelled out for the grid's target model."""
        from .. import zoo
        from ..targets.spec import builtin_name

        out: list[str] = []
        for s in self.surrogates:
            if s == "all":
                out += [m.short for m in zoo.BUILTIN.values() if m.name != target]
            elif builtin_name(s) is None:
                out.append(s)
            else:
                out.append(zoo.builtin(s).short)
        return list(dict.fromkeys(out))

    def case_params(self, target: str | None, defense: list[dict[str, Any]] | None = None) -> str:
        """The params JSON of its cases: the attack's hyperparameters, plus the surrogates of
        a surrogate-guided attack and the defence stack in front of the target (so cases
        with other surrogates or defences are other cases; one without keeps its id)."""
        extra: dict[str, Any] = {}
        if self.surrogates:
            extra["surrogates"] = self.surrogate_names(target)
        if defense:
            extra["defense"] = defense
        return json.dumps({**self.params, **extra}, sort_keys=True)

    @field_validator("goal", "norm")
    @classmethod
    def _once(cls, v: list[str], info: ValidationInfo) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"a {info.field_name} is listed twice")
        return v

    @field_validator("seeds")
    @classmethod
    def _own_seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (any(s < 0 for s in v) or len(set(v)) != len(v)):
            raise ValueError("seeds must be distinct and >= 0")
        return v

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, Any]) -> dict[str, Any]:
        for axis in ("eps", "norm"):
            if axis in v:
                raise ValueError(f"{axis} is a grid axis: set the attack's {axis} list, not params")
        return v

    @field_validator("k")
    @classmethod
    def _k(cls, v: list[int]) -> list[int]:
        if any(k < 1 for k in v):
            raise ValueError("k must be >= 1")
        return v

    @field_validator("eps")
    @classmethod
    def _eps(cls, v: list[float]) -> list[float]:
        if any(not 0.0 < e < float("inf") for e in v):
            raise ValueError("eps must be > 0")
        return v

    def balls(self) -> list[tuple[str, float]]:
        """The (norm, ε) grid points, norms outermost."""
        return [(n, e) for n in self.norm for e in self.eps]

    @field_validator("budget")
    @classmethod
    def _budget(cls, v: list[int]) -> list[int]:
        if any(b < 3 for b in v):
            raise ValueError("budget must be >= 3 (clean query, a step, final verification)")
        if any(b > MAX_BUDGET for b in v):
            raise ValueError(f"budget must be <= {MAX_BUDGET:,} queries per case")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        registry.get(v)  # an unknown name lists the known ones
        return v

    def threats(self) -> list[Threat]:
        """The threat models to run; by default the one of the attack's first (its natural,
        least revealing) view."""
        if self.threat is not None:
            return self.threat
        first = registry.get(self.name).views[0]
        natural = next(t for t, v in registry.THREAT_VIEWS.items() if v == first)
        return [natural]  # type: ignore[list-item]

    def build(self, norm: str, eps: float) -> Any:
        """The attack object for one ball (raises ValidationError naming a bad param)."""
        return registry.build(self.name, **{**self.params, "norm": norm, "eps": eps})


class BenchConfig(_Frozen):
    name: str = Field("bench", min_length=1, max_length=100)
    seed: Whole = Field(0, ge=0)
    seeds: list[Whole] = Field(default_factory=lambda: [0], min_length=1)
    model: ModelSpec = Field(default_factory=lambda: ModelSpec())
    images: ImagesSpec
    targets: TargetsSpec = Field(default_factory=lambda: TargetsSpec())
    attacks: list[AttackSpec] = Field(min_length=1)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if any(s < 0 for s in v) or len(set(v)) != len(v):
            raise ValueError("seeds must be distinct and >= 0")
        return v

    def digest(self) -> str:
        """Hash of the validated config: cosmetic TOML edits do not change it, nor do fields
        added since at their defaults (a database made before them still opens)."""
        data = self.model_dump(mode="json")
        for key, default in _LATER_IMAGES.items():
            if data["images"].get(key) == default:
                del data["images"][key]
        for a in data["attacks"]:
            if a.get("defense") == []:
                del a["defense"]
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# [images] fields added after grids were first stored, with their defaults.
_LATER_IMAGES: dict[str, Any] = {"sets": [], "min_confidence": 0.5, "split": None}


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "config"


def validation_message(e: ValidationError, prefix: tuple[int | str, ...] = ()) -> str:
    first = e.errors()[0]
    msg = str(first["msg"]).removeprefix("Value error, ")
    return f"{_loc(prefix + tuple(first['loc']))}: {msg}"


def _check_attacks(cfg: BenchConfig) -> None:
    """Build every attack once and check each threat model, so a bad param or an attack that
    cannot run under a view fails before anything is written."""
    for i, spec in enumerate(cfg.attacks):
        info = registry.get(spec.name)
        for norm, eps in spec.balls():
            try:
                make_ball(norm, eps)  # an L∞ eps must lie in (0, 1]
            except UserInputError as e:
                raise UserInputError(f"attacks[{i}].eps: {e}") from None
            if norm not in info.norms:
                raise UserInputError(
                    f"attacks[{i}].norm: {spec.name} supports {', '.join(info.norms)}, not {norm}"
                )
            try:
                spec.build(norm, eps)
            except ValidationError as e:
                raise UserInputError(validation_message(e, ("attacks", i, "params"))) from None
            except TypeError as e:
                raise UserInputError(f"attacks[{i}].params: {e}") from None
            except UserInputError as e:  # e.g. the baseline's library is not installed
                raise UserInputError(f"attacks[{i}].name: {e}") from None
            _check_surrogates(i, spec, info, cfg.model.name)
            for goal in spec.goal:
                if not (info.targeted if goal == "targeted" else info.untargeted):
                    raise UserInputError(f"attacks[{i}].goal: {spec.name} has no {goal} mode")
            for threat in spec.threats():
                for k in spec.k if threat != "ql" else [1]:
                    why = registry.view_refusal(info, make_view(threat, k))
                    if why is not None:
                        raise UserInputError(f"attacks[{i}].threat: {why}")


def _check_surrogates(i: int, spec: AttackSpec, info: Any, target: str | None) -> None:
    if info.uses_surrogate and not spec.surrogates:
        raise UserInputError(f"attacks[{i}].surrogates: {spec.name} needs surrogates")
    if spec.surrogates and not info.uses_surrogate:
        raise UserInputError(f"attacks[{i}].surrogates: {spec.name} does not use surrogates")
    if not spec.surrogates:
        return
    from .. import zoo
    from ..targets.spec import builtin_name

    names = spec.surrogate_names(target)
    if not names:
        raise UserInputError(f"attacks[{i}].surrogates: 'all' leaves no model beside the target")
    if target is not None and any(builtin_name(s) == target for s in names):
        raise UserInputError(
            f"attacks[{i}].surrogates: {zoo.builtin(target).short} is the target itself"
        )


def parse_config(data: dict[str, Any], base: Path | None = None) -> BenchConfig:
    """Validate a grid; ``base``: where its relative paths start (the config file's folder)."""
    try:
        cfg = BenchConfig.model_validate(data, context={"base": base})
    except ValidationError as e:
        raise UserInputError(validation_message(e)) from None
    _check_attacks(cfg)
    return cfg


def load_config(path: str | Path) -> tuple[BenchConfig, str]:
    """Read and validate a TOML grid. Returns the config and the TOML text."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(f"{p}: no such config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserInputError(f"{p}: cannot read config ({e})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserInputError(f"{p}: not valid TOML ({e})") from None
    return parse_config(data, p.parent.resolve()), text
