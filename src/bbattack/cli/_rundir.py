"""What ``bbattack attack`` keeps in ``--out`` beside its outputs, so that the run can be
resumed (``--resume DIR``) and replayed (``bbattack replay DIR``):

* ``run.json``: the command's config (everything that decides its queries) and its hash, the
  command line, the journal's file and run number, the target's identity;
* ``inputs.npz``: the image and the start image, exactly as attacked (float32);
* ``journal.sqlite``: the query journal (or the file ``--journal`` names, for a label API);
* ``checkpoints/``: the latest two checkpoints, removed once the result is written.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..defenses import build, parse_specs
from ..errors import TARGET_DOWN_REASONS, UserInputError
from ..provenance import config_hash
from ..results import write_atomic

__all__ = [
    "JOURNAL_NAME",
    "RESUMABLE_STOPS",
    "RUN_FORMAT",
    "RunRecord",
    "discard",
    "finished_stop",
    "first_difference",
    "image_digest",
    "job_config",
    "remove_checkpoints",
    "resumable_record",
]

# Stops that a later run can go past: the target was down or the key's quota spent (exit 3).
# A resume replays the run from its journal (paid queries answered free) and goes on.
JOURNAL_NAME = "journal.sqlite"
RESUMABLE_STOPS = TARGET_DOWN_REASONS

RUN_FORMAT = 1
FloatArray = NDArray[np.float32]


def image_digest(x: FloatArray | None) -> str | None:
    """SHA-256 (16 hex) of an image's float32 bytes and shape."""
    if x is None:
        return None
    from ..attacks.checkpoint import digest_of

    return digest_of(np.asarray(x, np.float32))


def job_config(
    job: Any, attack: Any, budget: int, x: FloatArray, start: FloatArray | None
) -> dict[str, Any]:
    """Everything that decides a ``bbattack attack`` run's queries: a resume must give the
    same. The image is named by its digest, so a copy elsewhere resumes too."""
    from ..targets.spec import parse_spec

    r = job.remote
    # Only where given: the config hash of a run without a defence stays what it was.
    specs = getattr(job, "defenses", ())
    defense = {"defense": [build(s).describe() for s in parse_specs(specs)]} if specs else {}
    return {
        "image": image_digest(x),
        "start_image": image_digest(start),
        "target": job.target,
        "untargeted": job.untargeted,
        "threat": job.threat.value,
        "k": job.k,
        "success": job.success,
        "attack": attack.name,
        "attack_config": attack.config.model_dump(mode="json"),
        "max_queries": budget,
        "seed": job.seed,
        # The canonical spec (absolute paths, sorted options): a resume or a replay loads it.
        "model": None if r is not None else parse_spec(job.model or "efficientnet-lite0").text,
        "remote": None
        if r is None
        else {
            "endpoint": r.endpoint,
            "max_results": r.max_results,
            "max_cost": r.max_cost,
            "price_per_1000": r.price,
            **r.config_extra,  # the wire schema, where it is not Google's
        },
        "surrogates": [_surrogate_spec(s) for s in job.surrogates],
        **defense,
    }


def _surrogate_spec(text: str) -> str:
    """A built-in name or ``all`` as given (the config hash of such runs stays what it was),
    any other spec canonical, so that a replay elsewhere loads the same file."""
    from ..targets.spec import builtin_name, parse_spec

    return text if text == "all" or builtin_name(text) else parse_spec(text).text


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The first key path where two JSON values differ (None: equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}".lstrip(".")
            d = first_difference(a[k], b[k], f"{path}.{k}")
            if d is not None:
                return d
        return None
    return None if a == b else (path.lstrip(".") or "(the whole value)")


@dataclass
class RunRecord:
    """The content of run.json."""

    config: dict[str, Any]
    command: list[str] = field(default_factory=list)
    journal: str = JOURNAL_NAME  # relative to the run directory where it is inside it
    journal_run: int = 0
    target: dict[str, Any] = field(default_factory=dict)
    target_class: int | None = None  # the target resolved (a label API's: the journal's id)

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)

    def journal_path(self, out: Path) -> Path:
        p = Path(self.journal)
        return p if p.is_absolute() else out / p

    @staticmethod
    def journal_name(out: Path, journal: Path | None) -> str:
        """How run.json names the journal: relative inside ``out``, absolute elsewhere."""
        if journal is None:
            return JOURNAL_NAME
        j, o = journal.resolve(), out.resolve()
        return str(j.relative_to(o)) if j.is_relative_to(o) else str(j)

    def write(self, out: Path, x: FloatArray, start: FloatArray | None) -> None:
        """inputs.npz, then run.json (both atomic; run.json last marks a run directory)."""
        buf = io.BytesIO()
        if start is None:
            np.savez_compressed(buf, x=x)
        else:
            np.savez_compressed(buf, x=x, start=start)
        tmp = out / f".inputs.npz.{os.getpid()}.tmp"
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, out / "inputs.npz")
        doc = {
            "format": RUN_FORMAT,
            "config": self.config,
            "config_hash": self.config_hash,
            "command": self.command,
            "journal": {"file": self.journal, "run": self.journal_run},
            "target": self.target,
            "target_class": self.target_class,
        }
        write_atomic(out / "run.json", json.dumps(doc, indent=2) + "\n")

    @classmethod
    def read(cls, out: Path) -> tuple[RunRecord, FloatArray, FloatArray | None]:
        """run.json and inputs.npz of a run directory; UserInputError if they are not whole."""
        try:
            doc = json.loads((out / "run.json").read_text())
            with np.load(out / "inputs.npz", allow_pickle=False) as z:
                x = np.asarray(z["x"], np.float32)
                start = np.asarray(z["start"], np.float32) if "start" in z.files else None
            if doc.get("format") != RUN_FORMAT:
                raise ValueError(f"format {doc.get('format')}")
            rec = cls(
                config=doc["config"],
                command=list(doc.get("command", [])),
                journal=str(doc["journal"]["file"]),
                journal_run=int(doc["journal"]["run"]),
                target=dict(doc.get("target", {})),
                target_class=doc.get("target_class"),
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserInputError(f"{out}: not a whole bbattack run directory ({e})") from None
        if doc.get("config_hash") != rec.config_hash:
            raise UserInputError(f"{out}/run.json: its config does not match its hash (edited?)")
        return rec, x, start


def resumable_record(out: Path, record: RunRecord) -> RunRecord:
    """The run.json of ``out``, refused (UserInputError) if made with another config."""
    old, _, _ = RunRecord.read(out)
    if old.config_hash != record.config_hash:
        where = first_difference(old.config, record.config)
        raise UserInputError(
            f"--resume {out}: that run was made with another config ({where} "
            f"differs; config hash {old.config_hash}, this command {record.config_hash})"
        )
    return old


def finished_stop(out: Path) -> str | None:
    """The stop reason of the result in ``out``; None where there is no result yet."""
    try:
        doc = json.loads((out / "result.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return "unreadable result.json"
    return str(doc.get("stop_reason")) if isinstance(doc, dict) else "unreadable result.json"


def remove_checkpoints(out: Path) -> None:
    """The result is written: the checkpoints are no longer needed (the journal stays)."""
    shutil.rmtree(out / "checkpoints", ignore_errors=True)


def discard(out: Path, journal: Path, journal_existed: bool, keep_paid: bool) -> None:
    """A new run refused as a user error: remove what it wrote (run.json, inputs.npz,
    checkpoints, and a journal it created), so nothing is left behind, except the journal of
    a label API that charged queries (``keep_paid``): the audit of what was paid."""
    for name in ("run.json", "inputs.npz"):
        (out / name).unlink(missing_ok=True)
    remove_checkpoints(out)
    if journal_existed or (keep_paid and _has_queries(journal)):
        return
    for side in ("", "-wal", "-shm", "-journal"):
        Path(f"{journal}{side}").unlink(missing_ok=True)


def _has_queries(journal: Path) -> bool:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{journal.resolve()}?mode=ro", uri=True) as db:
            return bool(db.execute("SELECT COUNT(*) FROM queries").fetchone()[0])
    except sqlite3.Error:
        return False
