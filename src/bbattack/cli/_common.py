"""What every command shares: the typer app, the consoles, option enums and error handling."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from ..errors import BBAttackError, UserInputError

if TYPE_CHECKING:
    from ..attacks.checkpoint import Every

__all__ = [
    "ARGV",
    "CLICK_ERROR",
    "SEED_MAX",
    "BackendOpt",
    "Threat",
    "app",
    "checkpoint_every",
    "err",
    "fail",
    "finite",
    "guard",
    "out",
    "parse_params",
    "print_error",
    "validation_message",
]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Black-box adversarial attacks with limited queries and information.",
)
err = Console(stderr=True)
out = Console()

# typer vendors click in recent releases; find its exception base without a private import.
CLICK_ERROR: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def checkpoint_every(text: str) -> Every | None:
    """``--checkpoint-every``: an ``Every`` for steps (50) or a time (30s, 5m), None for
    ``off``; anything else one line, before any query. The same for `attack` and `bench`."""
    from ..attacks.checkpoint import Every

    if text.strip().lower() == "off":
        return None
    try:
        return Every.parse(text)
    except UserInputError:
        raise UserInputError(
            f"--checkpoint-every: expected steps (50), a time (30s, 5m) or off, got {text!r}"
        ) from None


# The command line main() was given (a resume command is made from it).
ARGV: list[str] | None = None

# Seeds go to numpy's SeedSequence and into int64 arrays (seed + image index): 63 bits.
SEED_MAX = 2**63 - 1


class Threat(StrEnum):
    ql = "ql"
    pi = "pi"
    lo = "lo"


class BackendOpt(StrEnum):
    auto = "auto"
    onnx = "onnx"
    torch = "torch"


def print_error(message: str) -> None:
    """One red ``error:`` line; the message is plain text, not markup: paths and install hints
    ("bbattack[ray]") hold brackets."""
    err.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)


def fail(message: str) -> typer.Exit:
    print_error(message)
    return typer.Exit(2)


def validation_message(e: ValidationError) -> str:
    first = e.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "config"
    return f"invalid {loc}: {first['msg']}"


def finite(name: str, value: float | None) -> None:
    """UserInputError for a float option that is NaN or infinite (typer reads "inf", "nan")."""
    if value is not None and not math.isfinite(value):
        raise UserInputError(f"{name} must be a finite number, got {value}")


def _refuse_non_finite(name: str, value: Any) -> None:
    if isinstance(value, float):
        finite(name, value)
    elif isinstance(value, list):
        for v in value:
            _refuse_non_finite(name, v)
    elif isinstance(value, dict):
        for v in value.values():
            _refuse_non_finite(name, v)


def parse_params(params: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a VALUE that reads as JSON is taken as such (numbers, lists),
    else as a string. NaN and infinities (JSON's ``NaN``, ``Infinity``) are refused."""
    parsed: dict[str, Any] = {}
    for p in params:
        key, sep, value = p.partition("=")
        if not sep or not key.strip():
            raise UserInputError(f"--param expects KEY=VALUE, got {p!r}")
        try:
            v = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            v = value
        _refuse_non_finite(f"--param {key.strip()}", v)
        parsed[key.strip()] = v
    return parsed


def guard(fn: Callable[..., None], **kwargs: Any) -> None:
    """Run a command body; user errors become one line on stderr and exit code 2."""
    try:
        fn(**kwargs)
    except BBAttackError as e:
        if isinstance(e, UserInputError):
            raise fail(str(e)) from None
        raise
    except ValidationError as e:
        raise fail(validation_message(e)) from None
