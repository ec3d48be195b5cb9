"""The output directory of ``bbattack attack``: checked, locked and claimed before the first
query, so that a result paid for is never lost to an unusable ``--out``.

* ``--out`` must be a directory that can be written: a probe file is created, written and
  removed there before anything is sent.
* Nothing is clobbered: an existing non-empty ``--out`` is refused unless ``--resume`` (go on
  with the run it holds) or ``--force`` (``--overwrite``: start over; the old result, run
  description and checkpoints go, the query journal stays and answers what it holds).
* One attack at a time per directory: an exclusive ``flock`` on the directory itself (no lock
  file is left behind), held until the outputs are written.
* Without ``--out`` a fresh timestamped directory under ``bbattack-out/`` is made.
* A directory made here and left empty (a run refused or failed before writing) is removed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import time
from pathlib import Path
from types import TracebackType

from ..errors import UserInputError

__all__ = ["DEFAULT_ROOT", "JOURNAL_NAME", "OUTPUT_NAMES", "RUN_NAMES", "OutDir", "fresh_default"]

DEFAULT_ROOT = Path("bbattack-out")
OUTPUT_NAMES = ("adv.png", "figure.png", "trace.png", "result.json", "trace.jsonl")
# What a run keeps beside its outputs (see _rundir): --force removes them, the journal stays.
RUN_NAMES = ("run.json", "inputs.npz", "checkpoints")
JOURNAL_NAME = "journal.sqlite"


def fresh_default(root: Path = DEFAULT_ROOT, now: float | None = None) -> Path:
    """A directory name under ``root`` for this run: ``YYYYMMDD-HHMMSS``, with ``-2``, ``-3``
    ... if that one is taken. It is not created here."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    p = root / stamp
    n = 2
    while p.exists():
        p = root / f"{stamp}-{n}"
        n += 1
    return p


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


class OutDir:
    """``with OutDir(path, overwrite=..., resume=...) as out:`` claims ``path`` for one run
    (see the module docstring); UserInputError, with nothing created, if it cannot."""

    def __init__(self, path: Path, *, overwrite: bool = False, resume: bool = False) -> None:
        self.path = path
        self.overwrite = overwrite
        self.resume = resume
        self._fd: int | None = None
        self._created: list[Path] = []

    def __enter__(self) -> OutDir:
        try:
            self._claim()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()

    def _claim(self) -> None:
        p = self.path
        if p.exists() and not p.is_dir():
            raise UserInputError(f"--out {p}: exists and is not a directory")
        self._make(p)
        try:
            self._fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise UserInputError(
                    f"--out {p}: another bbattack attack is writing there; wait for it, "
                    "or choose another --out"
                ) from None
            raise UserInputError(f"--out {p}: cannot open it ({_why(e)})") from None
        found = sorted(e.name for e in p.iterdir())
        if self.resume and not (p / "run.json").is_file():
            raise UserInputError(f"--resume {p}: no run to resume there (no run.json)")
        if found and not (self.overwrite or self.resume):
            what = "a result" if (p / "result.json").exists() else "files"
            shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
            raise UserInputError(
                f"--out {p} already holds {what} ({shown}); pass --resume {p} to go on with "
                "its run, --force to start over, or choose another --out"
            )
        self._probe(p)
        if self.overwrite:
            self._clear(p)

    @staticmethod
    def _clear(p: Path) -> None:
        """--force: the old result and run go (the journal stays: it answers repeats)."""
        for name in (*OUTPUT_NAMES, *RUN_NAMES):
            q = p / name
            if q.is_dir() and not q.is_symlink():
                shutil.rmtree(q)
            elif q.exists() or q.is_symlink():
                q.unlink()

    def _make(self, p: Path) -> None:
        """Create ``p`` and its missing parents, remembering which were new."""
        missing = [d for d in (p, *p.parents) if not d.exists()]
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                if not d.is_dir():
                    raise UserInputError(f"--out {p}: {d} is not a directory") from None
                continue
            except OSError as e:
                raise UserInputError(f"--out {p}: cannot create {d} ({_why(e)})") from None
            self._created.append(d)

    @staticmethod
    def _probe(p: Path) -> None:
        probe = p / f".bbattack-probe-{os.getpid()}"
        try:
            with open(probe, "xb") as f:
                f.write(b"probe")
                f.flush()
                os.fsync(f.fileno())
            probe.unlink()
        except OSError as e:
            if probe.exists():
                probe.unlink(missing_ok=True)
            raise UserInputError(f"--out {p}: cannot write there ({_why(e)})") from None

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the lock
            self._fd = None
        for d in reversed(self._created):  # innermost first: only what is still empty goes
            try:
                d.rmdir()
            except OSError:
                break
        self._created = []

    def keep(self) -> None:
        """The outputs are written: the directories made here stay."""
        self._created = []
