"""One ``bbattack attack`` run against its target, crash-safe: the query journal behind the
oracle, checkpoints between steps, Ctrl-C (a last checkpoint, then exit 130), and the blocks
result.json gains (remote, surrogates, provenance)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from ..attacks import registry
from ..attacks.checkpoint import Checkpoint, Checkpointer, Every
from ..attacks.request import RunRequest
from ..defenses import defense_block, from_config
from ..errors import UserInputError
from ..models import Classifier, load_model
from ..oracle import Labels, Middleware, Oracle, Scores, TopK, View
from ..oracle.journal import Journal, JournalStats, target_identity
from ..oracle.views import threat_view
from ..provenance import describe_target, provenance
from ..results import AttackResult
from ..surrogates import Surrogate, surrogate_block
from ._commands import rerun_command, resume_command
from ._common import Threat, err
from ._progress import progress_run
from ._remote import open_checked
from ._rundir import RunRecord
from ._watch import OriginalCurve, RetryNotes, Watched

__all__ = [
    "EXIT_INTERRUPTED",
    "Plan",
    "execute",
    "rerun_command",
    "result_blocks",
    "resume_command",
]

EXIT_INTERRUPTED = 130
FloatArray = NDArray[np.float32]


class Plan:
    """What :func:`execute` needs besides the job: where, and whether it resumes."""

    def __init__(self, out: Path, record: RunRecord, every: Every, resume: bool) -> None:
        self.out, self.record, self.every, self.resume = out, record, every, resume


def execute(
    job: Any,
    plan: Plan,
    model: Classifier | None,
    attack: registry.Runnable,
    budget: int,
    x: FloatArray,
    start: FloatArray | None,
    surrogates: Sequence[Surrogate] = (),
) -> tuple[AttackResult, dict[str, Any], tuple[str | None, OriginalCurve]]:
    """Run (or resume) the attack; the result, result.json's extra blocks, and what the
    command watched (the target's last failure, the clean class's curve)."""
    out, record = plan.out, plan.record
    retries = RetryNotes()
    client, watched, view, model = _open_target(job, model, budget, retries)
    target_info = describe_target(None if job.remote else model, target_identity(watched))
    try:
        if plan.resume and record.target.get("identity") != target_info["identity"]:
            raise UserInputError(
                f"--resume {out}: the run was made against {record.target.get('identity')}, "
                f"this one is {target_info['identity']} (another model or backend)"
            )
        # Paid queries are fsynced before use; a local model's are free to ask again.
        journal = Journal(record.journal_path(out), durable=job.remote is not None)
    except BaseException:
        if client is not None:
            client.close()
        raise
    try:
        if plan.resume:
            journal.resume_run(record.journal_run)
        else:
            record.journal_run = journal.new_run(note={"config_hash": record.config_hash})
        layers = from_config(record.config.get("defense"))
        oracle = Oracle(
            watched,
            view,
            max_queries=budget,
            hooks=[watched.hook],
            journal=journal,
            middleware=layers,
        )
        # After the oracle: a label API's vocabulary is the journal's, ids stay the same.
        names = oracle.class_names
        assert names is not None
        tgt = None if job.target is None else names.resolve(job.target)
        if not plan.resume:
            record.target, record.target_class = target_info, tgt
            record.write(out, x, start)  # before the first query
        checkpoints = _checkpointer(plan, watched, out)
        request = RunRequest(
            x,
            tgt,
            seed=job.seed,
            start=start,
            success=job.goal,
            surrogates=surrogates,
            checkpoints=checkpoints,
            resume=plan.resume,
        )
        with _ctrl_c(checkpoints):
            result = progress_run(attack, oracle, request, False, watched, retries)
    finally:
        if client is not None:
            client.close()  # waits for calls in flight: the paid count is final after this
        stats, last, chain = journal.stats(), journal.position, journal.chain_head()
        journal.close()
    transport = None
    if client is not None:
        transport = {"http_calls": client.http_calls, "retries": client.retries}
    extra = result_blocks(record, stats, last, chain, surrogates, transport, layers)
    return result, extra, (watched.failure, watched.curve)


def _open_target(
    job: Any, model: Classifier | None, budget: int, retries: RetryNotes
) -> tuple[Any, Watched, View, Classifier | None]:
    """The job's target, watched, and its view: a label API's client (checked: refused before
    the journal or run.json is written) or the local model (an unknown target class is
    refused now). The client is None for a local model; the model None for a label API."""
    if job.remote is not None:
        from ..targets import LabelTarget

        client = open_checked(job.remote, budget, "{e}; no image was sent", retries)
        if job.threat is Threat.ql:  # the API lists every class (RemoteOptions.every_class)
            from ..targets.every_class import EveryClassTarget

            scored = EveryClassTarget(client, job.remote.max_results, name=job.remote.endpoint)
            return client, Watched(scored), Scores(), model
        target = LabelTarget(client, name=job.remote.endpoint, ancestors=job.remote.ancestors)
        view: View = TopK(job.k) if job.threat is Threat.pi else Labels(job.k or 10)
        return client, Watched(target), view, model
    model = model or load_model(backend=job.backend.value)
    if job.target is not None and model.class_names is not None:
        model.class_names.resolve(job.target)  # an unknown class: refused now
    return None, Watched(model), _local_view(job.threat, job.k or 1), model


def result_blocks(
    record: RunRecord,
    stats: JournalStats,
    last: int,
    chain: str,
    surrogates: Sequence[Surrogate],
    transport: dict[str, int] | None,
    defenses: Sequence[Middleware] = (),
) -> dict[str, Any]:
    """result.json's blocks beside the result: ``remote`` (what the journal says was paid,
    every session's; the HTTP calls and retries of the last one), ``surrogates``, ``defense``
    (what the defences in front of a local model refused) and ``provenance``. A replay builds
    the same from the same run."""
    extra: dict[str, Any] = {}
    if defenses:
        extra["defense"] = defense_block(defenses)
    r = record.config.get("remote")
    if r is not None:
        price = r["price_per_1000"]  # None: an API not priced per image
        # A label API's refusal (a defence behind it) is its answer to a paid call: billed.
        # The CLI puts no defence of its own in front of a label API, so every refused row
        # of a remote run is the API's.
        paid = stats.paid + stats.refused
        extra["remote"] = {
            "endpoint": r["endpoint"],
            "schema": r.get("schema", "gcv"),
            "paid_queries": paid,
            "refused": stats.refused,  # of those, refused by the API's defence
            "lost_billed": stats.lost_billed,  # sent, never answered: billed all the same
            "cached_queries": stats.journal,
            "cost_usd": None if price is None else (paid + stats.lost_billed) * price / 1000.0,
            "price_per_1000": price,
            **(transport or {"http_calls": 0, "retries": 0}),
        }
    if surrogates:
        fam = _Family(record.target.get("family"))
        extra["surrogates"] = surrogate_block(surrogates, cast(Classifier, fam))
    extra["provenance"] = provenance(
        target=record.target,
        config=record.config,
        seed=int(record.config["seed"]),
        journal={"file": record.journal, "run": record.journal_run, "last_seq": last}
        | {"chain": chain, **stats.as_dict()},
    )
    return extra


class _Family:
    """What surrogate_block reads of the target: its family."""

    def __init__(self, family: str | None) -> None:
        self.family = family


def _local_view(threat: Threat, k: int) -> View:
    return threat_view(threat.value, k)


def _checkpointer(plan: Plan, watched: Watched, out: Path) -> Checkpointer:
    curve = watched.curve

    def annex() -> dict[str, Any]:
        return {"original": curve.original, "points": [list(p) for p in curve.points]}

    def on_load(ck: Checkpoint) -> None:
        curve.original = ck.annex.get("original")
        curve.points[:0] = [(int(q), s, r) for q, s, r in ck.annex.get("points", [])]
        err.print(
            f"resuming {out} after step {ck.step} ({ck.path.name}); the queries made since "
            "come from the journal",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )

    def warn(text: str) -> None:
        err.print(f"warning: {text}", markup=False, highlight=False, soft_wrap=True)

    return Checkpointer(
        out / "checkpoints",
        plan.every,
        fingerprint={"command": plan.record.config_hash},
        annex=annex,
        on_load=on_load,
        warn=warn,
    )


@contextmanager
def _ctrl_c(checkpoints: Checkpointer) -> Iterator[None]:
    """The first Ctrl-C asks for a checkpoint after the current step; a second stops now
    (the previous checkpoint and the journal still resume the run)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if checkpoints.stop_requested:
            raise KeyboardInterrupt
        checkpoints.stop_requested = True
        err.print(
            "stopping after this step to write a checkpoint (Ctrl-C again: stop now)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
