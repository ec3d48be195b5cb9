"""The command lines a run prints so that a user can go on: resume it, or run it again."""

from __future__ import annotations

import shlex
from pathlib import Path

from . import _common

__all__ = ["rerun_command", "resume_command", "start_command"]


def resume_command(out: Path) -> str:
    """The command line that resumes this run: the one given, with --resume DIR for --out."""
    return shlex.join(["bbattack", *_given(), "--resume", str(out)])


def rerun_command(out: Path) -> str:
    """The command line that runs this one again from the start, in the same directory."""
    return shlex.join(["bbattack", *_given(), "--out", str(out), "--force"])


def start_command(out: Path) -> str:
    """The command line that starts this run in ``out`` (a folder with no run in it)."""
    return shlex.join(["bbattack", *_given(), "--out", str(out)])


def _given() -> list[str]:
    """The command given, without where it writes and whether it resumes or starts over."""
    argv = list(_common.ARGV or ["attack", "..."])
    kept: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--out", "--resume"):
            skip = True
            continue
        if a.startswith(("--out=", "--resume=")) or a in ("--force", "--overwrite"):
            continue
        kept.append(a)
    return kept
