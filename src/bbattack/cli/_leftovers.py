"""What a killed ``bbattack attack`` leaves in its ``--out``, and how the next command on that
folder (the same command, ``--resume``, ``--force``, another run with ``--out`` there) tidies
it once it holds the folder's lock, before it looks at what the folder holds:

* half-made files (``.staging-*`` output folders, temporary ``run.json``, ``inputs.npz`` and
  checkpoint files, write probes) are removed: no live run writes them, the lock says so;
* the checkpoints of a run whose ``result.json`` is final are removed, as the run itself does
  right after writing it (a run its target stopped keeps them: ``--resume`` goes on from them);
* a run killed before its first query (no ``run.json`` yet) leaves ``inputs.npz`` and a journal
  with no query in it: both go, and the folder is empty again. A journal that holds a query
  (paid, or sent to a paid API) is never removed.

Without ``--out`` every run gets a fresh folder, so the one a kill left is never named again:
:func:`prune_killed` tidies the folders under ``bbattack-out/`` that hold no run (older than a
minute and locked by nobody) and removes those left empty.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

from ._commands import start_command
from ._common import err
from ._rundir import JOURNAL_NAME, RESUMABLE_STOPS

__all__ = ["JOURNAL_FILES", "no_run", "prune_killed", "tidy"]

# What a run writes to a temporary name and renames (report.write_outputs, write_atomic,
# RunRecord.write, OutDir's probe); in checkpoints/: a checkpoint being written.
_HALF_MADE = (".staging-*", ".run.json.*", ".inputs.npz.*.tmp", ".bbattack-probe-*")
_HALF_MADE_CHECKPOINTS = (".ckpt-*.npz.*.tmp",)
JOURNAL_FILES = tuple(f"{JOURNAL_NAME}{side}" for side in ("", "-wal", "-shm", "-journal"))
# What a new run writes before run.json: with run.json missing, the run never sent a query.
_BEFORE_RUN_JSON = {"inputs.npz", *JOURNAL_FILES}
STALE_S = 60.0  # a folder under bbattack-out/ that young may be a run starting up


def tidy(out: Path, say: bool = False) -> list[str]:
    """Remove what a killed run left in ``out`` (see the module docstring); the names removed,
    relative to ``out`` (``say``: in one line on stderr). The caller holds the folder's lock."""
    removed = _tidy(out)
    if removed and say:
        err.print(
            f"note: removed what a killed run left in {out}: {', '.join(removed)}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    return removed


def no_run(out: Path, found: list[str], made: bool) -> str:
    """Why ``--resume`` of a folder without run.json is refused; an empty one that was there
    (a run killed before its first query leaves it so) gets the command that starts the run."""
    if found or made:
        return f"--resume {out}: no run to resume there (no run.json)"
    return (
        f"--resume {out}: no run to resume there (the folder is empty: a run killed before its "
        f"first query sent nothing); start it with: {start_command(out)}"
    )


def _tidy(out: Path) -> list[str]:
    """Best effort: what cannot be removed (a read-only folder) stays, and the write probe
    that follows says why."""
    removed = _remove(out, _HALF_MADE) + _remove(out / "checkpoints", _HALF_MADE_CHECKPOINTS)
    if (out / "run.json").is_file():
        if (out / "checkpoints").is_dir() and _final_result(out) and _gone(out / "checkpoints"):
            removed.append("checkpoints/ (its result.json is final)")
        return removed
    names = {p.name for p in out.iterdir()}
    if not names or not names <= _BEFORE_RUN_JSON:
        return removed
    if _journal_rows(out / JOURNAL_NAME) != 0:  # holds queries, or unreadable: kept
        names -= set(JOURNAL_FILES)
    for name in sorted(names):
        if _gone(out / name) and not name.startswith(f"{JOURNAL_NAME}-"):
            removed.append(name + (" (no query in it)" if name == JOURNAL_NAME else ""))
    return removed


def prune_killed(root: Path, now: float | None = None) -> None:
    """Tidy the folders under ``root`` that hold no run.json, older than STALE_S and locked by
    no one, and remove those left empty: what runs killed before their first query left."""
    if not root.is_dir():
        return
    limit = (time.time() if now is None else now) - STALE_S
    for d in sorted(root.iterdir()):
        try:
            if d.is_symlink() or not d.is_dir() or (d / "run.json").exists():
                continue
            if d.stat().st_mtime > limit:
                continue
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            tidy(d)
            d.rmdir()  # only if empty
        except OSError:
            pass  # locked (a run there), not empty, or not ours to change: left as it is
        finally:
            os.close(fd)


def _remove(folder: Path, patterns: tuple[str, ...]) -> list[str]:
    if not folder.is_dir() or folder.is_symlink():
        return []
    inside = "checkpoints/" if folder.name == "checkpoints" else ""
    return [
        f"{inside}{p.name}"
        for pattern in patterns
        for p in sorted(folder.glob(pattern))
        if _gone(p)
    ]


def _gone(p: Path) -> bool:
    """Remove a file or a folder tree; whether it is gone."""
    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    except OSError:
        return False
    return True


def _final_result(out: Path) -> bool:
    """result.json reads back whole, and its run cannot be resumed past its stop."""
    try:
        doc = json.loads((out / "result.json").read_text())
    except (OSError, ValueError):
        return False
    stop = doc.get("stop_reason") if isinstance(doc, dict) else None
    return isinstance(stop, str) and stop not in RESUMABLE_STOPS


def _journal_rows(journal: Path) -> int | None:
    """The queries (and lost ones) a journal holds: 0 where it has none or no tables yet (made
    by a run killed at once), None where it cannot be read (then it is kept)."""
    if not journal.exists():
        return 0
    try:
        db = sqlite3.connect(journal, timeout=0)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables:
                return 0
            if not {"queries", "lost"} <= tables:
                return None
            count = "SELECT (SELECT COUNT(*) FROM queries) + (SELECT COUNT(*) FROM lost)"
            return int(db.execute(count).fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return None
