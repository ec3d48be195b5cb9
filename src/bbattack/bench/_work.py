"""A bench task's journal and checkpoints, in ``<db>.work/<task>/``: a task killed mid-run
(SIGKILL, a crash, Ctrl-C) resumes from its last checkpoint when the grid is run again, and the
queries it made after that checkpoint are answered from its journal. The directory is removed
once the task's cases are in the database."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..attacks.checkpoint import Checkpoint, Checkpointer, CheckpointError, Every
from ..attacks.request import Runnable, RunRequest
from ..models import Classifier
from ..oracle import Oracle
from ..oracle.journal import Journal
from ..provenance import describe_target, provenance
from ..results import AttackResult
from .db import CaseRow

__all__ = ["TaskWork", "case_provenance", "remove_work", "task_key"]


def task_key(case_ids: list[str]) -> str:
    """A task's directory name: a hash of its cases (a batch re-formed alike gets the same)."""
    return hashlib.sha256("|".join(case_ids).encode()).hexdigest()[:16]


class TaskWork:
    """The journal (and, for our attacks, the checkpoints) of one task."""

    def __init__(self, directory: Path, every: str, resumable: bool, key: str) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(directory / "journal.sqlite", durable=False)  # local models
        runs = self.journal.runs()
        # A library baseline cannot resume: it starts over, and its journal answers repeats.
        self.resumed = resumable and bool(runs)
        if self.resumed:
            self.journal.resume_run(runs[-1])
        else:
            self.journal.new_run(note={"task": key})
        self.from_step: int | None = None
        self.restarted: str | None = None  # why a resume had to start over
        self._block: dict[str, Any] | None = None
        self._key, self._every = key, every
        self.checkpoints: Checkpointer | None = self._checkpointer() if resumable else None

    def _checkpointer(self) -> Checkpointer:
        return Checkpointer(
            self.directory / "checkpoints",
            Every.parse(self._every),
            fingerprint={"task": self._key},
            on_load=self._loaded,
        )

    def _loaded(self, ck: Checkpoint) -> None:
        self.from_step = ck.step

    def run(self, attack: Runnable, oracle: Oracle, request: RunRequest) -> AttackResult:
        """Run ``request`` with this task's checkpoints: resumed where the task left some."""
        if self.resumed:
            try:
                return attack.execute(
                    oracle, replace(request, checkpoints=self.checkpoints, resume=True)
                )
            except CheckpointError as e:
                # Left by other attack code or another model (bbattack changed between the
                # runs): the task starts over. Refused before any query; the old journal
                # still answers the queries the new run repeats.
                self.restarted = str(e)
                shutil.rmtree(self.directory / "checkpoints", ignore_errors=True)
                self.checkpoints = self._checkpointer()
                self.journal.restart_run(note={"task": self._key, "restarted": self.restarted})
                self.resumed = False
        return attack.execute(oracle, replace(request, checkpoints=self.checkpoints, resume=False))

    def journal_block(self) -> dict[str, Any]:
        """The provenance's journal: where it was, its run, last query, chain head, counts
        (read when the task closes it)."""
        if self._block is not None:
            return dict(self._block)
        stats = self.journal.stats()
        return {
            "file": str(self.directory / "journal.sqlite"),
            "run": self.journal.run,
            "last_seq": self.journal.position,
            "chain": self.journal.chain_head(),
            **stats.as_dict(),
            "resumed_from_step": self.from_step,
            "restarted": self.restarted,
        }

    def close(self) -> None:
        self._block = self.journal_block()
        self.journal.close()


def remove_work(directory: Path) -> None:
    """A task's cases are recorded: its journal and checkpoints go."""
    shutil.rmtree(directory, ignore_errors=True)


def case_provenance(
    case: CaseRow, model: Classifier, oracle: Oracle, work: TaskWork | None, batch: list[CaseRow]
) -> dict[str, Any]:
    """A case's provenance: the common block, its batch, and the task's journal."""
    config = {k: v for k, v in dataclasses.asdict(case).items() if k not in ("id", "idx")}
    journal = None if work is None else work.journal_block()
    if journal is not None:
        journal["batch"] = [e.id for e in batch]
    target = describe_target(model, oracle.target_identity)
    return provenance(target=target, config=config, seed=case.seed, journal=journal)
