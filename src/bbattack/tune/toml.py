"""A small TOML writer for what `bbattack tune` writes (bench grids and ``[[attacks]]``
blocks): tables of scalars, lists and inline tables. The standard library reads TOML but does
not write it; the output is checked by reading it back with ``tomllib``."""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from typing import Any

__all__ = ["attack_block", "dumps", "value"]


def value(v: Any) -> str:
    """One TOML value: a bool, int, finite float, string, list/tuple or mapping (inline)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"no TOML for {v!r} here")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON's escapes (\", \\, \uXXXX) are TOML's basic-string ones
    if isinstance(v, list | tuple):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML for {type(v).__name__}")


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() and k.isascii() else json.dumps(k)


def _lines(table: Mapping[str, Any]) -> list[str]:
    return [f"{_key(k)} = {value(v)}" for k, v in table.items()]


def attack_block(attack: Mapping[str, Any]) -> str:
    """One ``[[attacks]]`` entry of a bench grid."""
    return "\n".join(["[[attacks]]", *_lines(attack)]) + "\n"


def dumps(data: Mapping[str, Any], header: str = "") -> str:
    """A whole grid: top-level scalars, then each table, then the ``attacks`` array."""
    out = [f"# {line}" for line in header.splitlines()]
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    arrays = {k: v for k, v in data.items() if k == "attacks"}
    plain = {k: v for k, v in data.items() if k not in tables and k not in arrays}
    out += _lines(plain)
    for name, table in tables.items():
        out += ["", f"[{_key(name)}]", *_lines(table)]
    for entry in arrays.get("attacks", []):
        out += ["", attack_block(entry).rstrip("\n")]
    text = "\n".join(out) + "\n"
    if tomllib.loads(text) != _plain(data):  # a writer bug must not change a grid silently
        raise AssertionError("TOML round trip changed the data")
    return text


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v
