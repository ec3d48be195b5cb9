"""The output directory of ``bbattack attack``: checked, locked and claimed before the first
query, so that a result paid for is never lost to an unusable ``--out``.

* ``--out`` must be a directory that can be written: a probe file is created, written and
  removed there before anything is sent.
* Nothing is clobbered: an existing non-empty ``--out`` is refused unless ``--resume`` (go on
  with the run it holds) or ``--force`` (``--overwrite``: start over; the old result, run
  description and checkpoints go, the query journal stays and answers what it holds).
* One attack at a time per directory: an exclusive ``flock`` on the directory itself (no lock
  file is left behind), held until the outputs are written. Under it, what a killed run left
  is tidied first (_leftovers): an empty run folder is reused, a finished one loses its
  checkpoints.
* Without ``--out`` a fresh timestamped directory under ``bbattack-out/`` is made.
* A directory made here and left empty (a run refused or failed before writing) is removed.
* The machine failing the run (a full disk, a read-only folder, an I/O error) ends it in one
  line: what happened, that the run is intact, the command that resumes it. A damaged
  ``inputs.npz`` is rewritten from the command's images; a damaged ``run.json`` or journal is
  refused with the command that goes on (README, "Crash-safe runs").
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import shutil
import sqlite3
import time
import zipfile
import zlib
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import UserInputError
from ..oracle._journal_db import JournalBehindError, environment_error
from ._commands import rerun_command, resume_command
from ._leftovers import no_run, tidy
from ._rundir import JOURNAL_NAME, image_digest

__all__ = [
    "DEFAULT_ROOT",
    "JOURNAL_NAME",
    "OUTPUT_NAMES",
    "RUN_NAMES",
    "OutDir",
    "RunEnvironmentError",
    "fresh_default",
]

DEFAULT_ROOT = Path("bbattack-out")
OUTPUT_NAMES = ("adv.png", "figure.png", "trace.png", "result.json", "trace.jsonl")
# What a run keeps beside its outputs (see _rundir): --force removes them, the journal stays.
RUN_NAMES = ("run.json", "inputs.npz", "checkpoints")


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


Inputs = tuple[NDArray[np.float32], NDArray[np.float32] | None]

# What the machine can do to a run, and what the user does about it.
_FAILURES: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("the disk is full", "free some space"),
    errno.EDQUOT: ("the disk quota is used up", "free some space"),
    errno.EFBIG: ("a file grew too large for the disk", "free some space"),
    errno.EROFS: ("the folder is read-only", "make it writable"),
    errno.EACCES: ("permission denied", "make it writable"),
    errno.EPERM: ("permission denied", "make it writable"),
    errno.EIO: ("the disk failed to read or write (I/O error)", "check the disk"),
}
# A damaged inputs.npz: what np.load and reading its arrays raise.
_DAMAGED_NPZ = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


class RunEnvironmentError(UserInputError):
    """The machine stopped the run (or the run's own files are damaged): one line that says
    what is kept and the command to continue; CLI exit 2, like a user error."""


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


class OutDir:
    """``with OutDir(path, overwrite=..., resume=...) as out:`` claims ``path`` for one run
    (see the module docstring); UserInputError, with nothing created, if it cannot."""

    def __init__(
        self,
        path: Path,
        *,
        overwrite: bool = False,
        resume: bool = False,
        inputs: Inputs | None = None,
    ) -> None:
        self.path = path
        self.overwrite = overwrite
        self.resume = resume
        self.inputs = inputs  # the command's images: a resume rewrites a damaged inputs.npz
        self._fd: int | None = None
        self._created: list[Path] = []
        self._found: set[str] | None = None  # once claimed: what was there before the run

    def __enter__(self) -> OutDir:
        try:
            self._claim()
        except BaseException as e:
            failure = self._environment(e)
            self._release()
            if failure is not None:
                raise failure from None
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        failure = None if exc is None else self._environment(exc)
        self._release()
        if failure is not None:
            raise failure from None

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
        tidy(p, say=True)
        found = sorted(e.name for e in p.iterdir())
        if self.resume and not (p / "run.json").is_file():
            raise UserInputError(no_run(p, found, made=p in self._created))
        if found and not (self.overwrite or self.resume):
            what = "a result" if (p / "result.json").exists() else "files"
            shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
            go_on = f"--resume {p} to go on with its run, " if (p / "run.json").exists() else ""
            raise UserInputError(
                f"--out {p} already holds {what} ({shown}); pass {go_on}--force to start "
                "over, or choose another --out"
            )
        self._probe(p, self.resume)
        if self.resume:
            _check_run_files(p, self.inputs)
        if self.overwrite:
            self._clear(p)
        self._found = {e.name for e in p.iterdir()}  # what a failed new run leaves as it was

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
    def _probe(p: Path, resume: bool) -> None:
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
            flag = "--resume" if resume else "--out"
            kept = ""
            if resume:
                fix = _FAILURES.get(e.errno or 0, ("", "fix that"))[1]
                kept = f"; the run there is untouched: {fix}, then run the same command again"
            raise UserInputError(f"{flag} {p}: cannot write there ({_why(e)}){kept}") from None

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

    def _environment(self, exc: BaseException) -> RunEnvironmentError | None:
        """The one line for a run the machine stopped; None for any other exception."""
        p = self.path
        journal = _journal_of(p)
        if isinstance(exc, sqlite3.Error):  # raised outside the journal's transactions
            exc = environment_error(exc, None if journal is None else str(journal[0])) or exc
        if type(exc) is sqlite3.DatabaseError:  # "malformed", "not a database": not a bug's
            return _damaged_journal(p, exc, journal)
        if isinstance(exc, JournalBehindError):
            return _journal_behind(p, exc)
        if not isinstance(exc, OSError) or exc.errno not in _FAILURES:
            return None
        what, fix = _FAILURES[exc.errno]
        head = f"{what} ({_shown(exc.filename, p)}{_why(exc)})"
        if journal is None:  # before run.json: nothing was asked of the target
            self._drop_new_run()
            return RunEnvironmentError(
                f"{head}; nothing was sent: {fix}, then run the same command again"
            )

        sent = _unrecorded(*journal)
        lost = f"; {sent} image(s) sent and not recorded count as billed and are asked again"
        return RunEnvironmentError(
            f"{head}; the run in {p} is intact (its journal and checkpoints are whole)"
            f"{lost if sent else ''}: {fix}, then resume with: {resume_command(p)}"
        )

    def _drop_new_run(self) -> None:
        """A new run failed before its first query: what it wrote goes, so that the same
        command can run again. Not before the directory was claimed, and never a journal that
        was there before or that holds a query."""
        p, found = self.path, self._found
        if found is None:
            return
        for name in ("inputs.npz", "checkpoints"):
            if name not in found:
                shutil.rmtree(p / name, ignore_errors=True)
                (p / name).unlink(missing_ok=True)
        journal = p / JOURNAL_NAME
        if JOURNAL_NAME not in found and _queries(journal) == 0:
            for side in ("", "-wal", "-shm", "-journal"):
                Path(f"{journal}{side}").unlink(missing_ok=True)
        for tmp in p.glob(".inputs.npz.*.tmp"):
            tmp.unlink(missing_ok=True)


def _shown(filename: Any, out: Path) -> str:
    """``<file>: `` for a message, relative to ``out`` where it lies inside it."""
    if not filename or not isinstance(filename, str | os.PathLike):
        return ""
    return f"{_relative(Path(filename), out)}: "


def _relative(f: Path, out: Path) -> str:
    try:
        return str(f.resolve().relative_to(out.resolve()))
    except ValueError:
        return str(f)


def _journal_of(out: Path) -> tuple[Path, int] | None:
    """The journal file and run that run.json names; None without a readable run.json."""
    try:
        doc = json.loads((out / "run.json").read_text())
        file, run = Path(str(doc["journal"]["file"])), int(doc["journal"]["run"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (file if file.is_absolute() else out / file), run


def _unrecorded(journal: Path, run: int) -> int:
    """Rows of ``run`` sent to a billed target and never answered on record."""
    return _queries(journal, "WHERE run = ? AND status = 'sent'", (run,))


def _queries(journal: Path, where: str = "", args: tuple[int, ...] = ()) -> int:
    """How many rows of the journal's queries match (0 for no journal or an unreadable one)."""
    if not journal.is_file():
        return 0
    try:
        db = sqlite3.connect(f"file:{journal.resolve()}?mode=ro", uri=True)
        try:
            return int(db.execute(f"SELECT COUNT(*) FROM queries {where}", args).fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def _damaged_journal(
    out: Path, e: sqlite3.Error, journal: tuple[Path, int] | None
) -> RunEnvironmentError:

    name = JOURNAL_NAME if journal is None else _relative(journal[0], out)
    return RunEnvironmentError(
        f"the journal {name} is damaged ({e}): the run in {out} cannot go on from it; move it "
        f"aside (the queries it held are asked again), then start over with: "
        f"{rerun_command(out)}"
    )


def _journal_behind(out: Path, e: JournalBehindError) -> RunEnvironmentError:
    """--resume with a journal that lost rows: go on from what it holds, or start over."""

    if e.behind:
        return RunEnvironmentError(
            f"{e} (the journal lost rows: a damaged file?); to go on from what it holds (the "
            f"queries after it are asked again): remove {out / 'checkpoints'}, then resume "
            f"with: {resume_command(out)}"
        )
    return RunEnvironmentError(
        f"{e} (a damaged or replaced file?): the run cannot go on from it; start over (the "
        f"queries it no longer holds are asked again) with: {rerun_command(out)}"
    )


def _check_run_files(out: Path, inputs: Inputs | None) -> None:
    """--resume: run.json must read back (else refused, with the command that starts over);
    a damaged inputs.npz is written again from the command's images, if they are the run's."""

    try:
        doc = json.loads((out / "run.json").read_text())
        wanted = (doc["config"]["image"], doc["config"]["start_image"])
        int(doc["journal"]["run"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RunEnvironmentError(
            f"--resume {out}: run.json is damaged ({type(e).__name__}: {e}); its checkpoints "
            "cannot be matched to a command without it, its journal is whole and answers "
            f"every query already paid, free: start over with: {rerun_command(out)}"
        ) from None
    try:
        with np.load(out / "inputs.npz", allow_pickle=False) as z:
            for name in z.files:
                np.asarray(z[name])
        return
    except _DAMAGED_NPZ as e:
        why = f"{type(e).__name__}: {e}"
    if inputs is None or wanted != (image_digest(inputs[0]), image_digest(inputs[1])):
        raise RunEnvironmentError(
            f"--resume {out}: inputs.npz is damaged ({why}) and this command's images are "
            "not the run's (their digests differ from run.json's): give the run's own command"
        )
    _write_inputs(out, *inputs)
    from ._common import err

    err.print(
        f"warning: {out}/inputs.npz was damaged ({why}); rewritten from this command's "
        "images (their digests are the run's)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _write_inputs(out: Path, x: NDArray[np.float32], start: NDArray[np.float32] | None) -> None:
    """inputs.npz as RunRecord.write makes it, written whole or not at all."""
    buf = io.BytesIO()
    arrays = {"x": x} if start is None else {"x": x, "start": start}
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    tmp = out / f".inputs.npz.{os.getpid()}.tmp"
    try:
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, out / "inputs.npz")
    finally:
        tmp.unlink(missing_ok=True)
