"""The ``bbattack`` command line: classify, attack, replay, attacks, models, demo, serve, bench,
report.

User errors (bad files, unknown classes, bad flags) print one line and exit with code 2,
and leave no output behind.
"""

from __future__ import annotations

import sys

import typer

# Importing a command module registers its commands on ``app``; this order is --help's.
# isort: off
from . import classify, attack, replay, attacks, models, tune, batch_size, serve, demo, bench  # noqa: F401

# isort: on
from . import _common
from ._common import CLICK_ERROR, app, err, print_error
from .bench import _ray_argv as _ray_argv  # tests call it through bbattack.cli

__all__ = ["app", "entry", "main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code. Usage errors print one line and give 2."""
    try:
        args = _ray_argv(list(sys.argv[1:] if argv is None else argv))
        _common.ARGV = args
        rc = app(args=args, standalone_mode=False)
    except CLICK_ERROR as e:
        print_error(" ".join(e.format_message().split()))
        return 2
    except typer.Abort:
        err.print("aborted")
        return 130
    return int(rc or 0)


def entry() -> None:
    sys.exit(main())
