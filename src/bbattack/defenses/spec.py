"""Defence specs as the command line and bench grids give them: ``NAME`` or
``NAME:KEY=VALUE,KEY=VALUE`` (``blacklight``, ``blacklight:action=reject,T=25,window=50``,
``rnd:nu=0.02``). Values are typed and checked against the defence's parameters; an unknown
name or key, or a bad value, is one UserInputError line that lists what is valid.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ..errors import UserInputError
from ..oracle import Middleware
from .aaa import Aaa
from .blacklight import Blacklight
from .piha import Piha
from .rnd import Rnd
from .stateful import Stateful

__all__ = ["DEFENSES", "build", "from_config", "parse_spec", "parse_specs"]

DEFENSES: dict[str, type[Middleware]] = {
    "blacklight": Blacklight,
    "piha": Piha,
    "stateful": Stateful,
    "rnd": Rnd,
    "aaa": Aaa,
}
# The papers' short names for parameters.
_ALIASES: dict[str, dict[str, str]] = {
    "blacklight": {"T": "threshold", "S": "top"},
    "stateful": {"K": "k"},
}


def _parameters(cls: type[Middleware]) -> dict[str, Any]:
    """A defence's parameters and their types, from its constructor."""
    hints = typing.get_type_hints(cls.__init__)
    names = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    return {n: hints[n] for n in names}


def parse_spec(spec: str) -> dict[str, Any]:
    """``NAME[:KEY=VALUE,...]`` as ``{"name": NAME, KEY: typed value, ...}`` (checked)."""
    name, _, rest = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in DEFENSES:
        raise UserInputError(
            f"--defense {spec!r}: unknown defence {name!r}; choose one of {', '.join(DEFENSES)}"
        )
    params = _parameters(DEFENSES[name])
    aliases = _ALIASES.get(name, {})
    out: dict[str, Any] = {"name": name}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, sep, value = item.partition("=")
        key = aliases.get(key.strip(), key.strip())
        if not sep or key not in params:
            valid = ", ".join([*params, *aliases])
            raise UserInputError(
                f"--defense {spec!r}: {name} takes KEY=VALUE with KEY one of: {valid}"
            )
        out[key] = _typed(spec, key, value.strip(), params[key])
    build(out)  # range checks (a threshold above the fingerprint size, ...) come now
    return out


def _typed(spec: str, key: str, value: str, hint: Any) -> Any:
    raw: Any = None if value.lower() in ("none", "null", "off") else value
    try:  # lax mode reads "25" as an int and "0.02" as a float
        return TypeAdapter(hint).validate_python(raw, strict=False)
    except ValidationError as e:
        msg = e.errors()[0]["msg"]
        raise UserInputError(f"--defense {spec!r}: {key}={value!r}: {msg}") from None


def parse_specs(specs: Sequence[str]) -> list[dict[str, Any]]:
    """Every spec, parsed (the order is the stack's, outermost first)."""
    return [parse_spec(s) for s in specs]


def build(config: dict[str, Any]) -> Middleware:
    """The defence a parsed spec (or a result's ``describe()``) names."""
    params = {k: v for k, v in config.items() if k != "name"}
    cls = DEFENSES[str(config["name"])]
    known = _parameters(cls)
    return cls(**{k: v for k, v in params.items() if k in known})


def from_config(configs: Sequence[dict[str, Any]] | None) -> list[Middleware]:
    """The stack a run's config records (fresh state)."""
    return [build(dict(c)) for c in configs or ()]
