"""Run a benchmark grid: in this process, in local worker processes, or as Ray tasks.

Only this (the driver) process writes the database; workers get plain-data tasks and send
plain-data outcomes back. Each case gets a fresh oracle with its own budget and the attack
runs with the case's seed, so a case's result does not depend on where or when it runs.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..attacks import registry
from ..attacks.checkpoint import Every
from ..attacks.request import RunRequest
from ..attacks.transfer._transfer import SurrogateMeter, metered
from ..defenses import defense_block, from_config
from ..errors import StartImageError, UserInputError
from ..images import decode_png, encode_png
from ..models import Classifier
from ..oracle import Middleware, Oracle
from ..surrogates import Surrogate, resolve_surrogates
from ._executors import processes, ray_executor, serial
from ._prepare import Confirm, prepare
from ._prepare import _locked as _locked  # where it was: a test locks a database with it
from ._work import TaskWork, case_provenance, remove_work, task_key
from .config import ModelSpec, make_view
from .db import BenchDB, CaseOutcome, CaseRow
from .grid import open_model

__all__ = ["BATCH", "BenchSummary", "Task", "prepare", "run_bench", "run_case", "run_task"]


# Cases of one grid point (same attack, view, ball, budget and hyperparameters) run as one
# vectorised batch of up to this many images. Our attacks give each image of a batch what a
# single run gives it (tests/test_bench.py checks it), so results do not depend on it.
BATCH = 16


@dataclass(frozen=True)
class Task:
    """Everything a worker needs for one case, or for a batch of cases of one grid point;
    picklable, no file access needed."""

    case: CaseRow
    model: dict[str, Any]  # ModelSpec dump
    image_png: bytes
    start_png: bytes | None
    more: tuple[tuple[CaseRow, bytes], ...] = ()  # the rest of a batch (never with a start)
    work_dir: str | None = None  # its journal and checkpoints (None: neither)
    every: str = "60s"  # how often it checkpoints

    @property
    def cases(self) -> list[CaseRow]:
        return [self.case, *(c for c, _ in self.more)]


_MODELS: dict[str, Classifier] = {}


def _model(spec: dict[str, Any]) -> Classifier:
    # One model per worker process, reused across its cases.
    key = json.dumps(spec, sort_keys=True)
    if key not in _MODELS:
        _MODELS[key] = open_model(ModelSpec.model_validate(spec))
    return _MODELS[key]


_SURROGATES: dict[tuple[str, ...], list[Surrogate]] = {}


def _surrogates(names: tuple[str, ...], spec: dict[str, Any], model: Classifier) -> list[Surrogate]:
    # Loaded once per worker process, like the model; checked against the target each time.
    if not names:
        return []
    if names not in _SURROGATES:
        _SURROGATES[names] = resolve_surrogates(list(names), model, spec.get("name"))
    return _SURROGATES[names]


def run_task(task: Task) -> list[CaseOutcome]:
    """Run a task's cases through one fresh oracle with their budget (per image) and view."""
    c, cases = task.case, task.cases
    model = _model(task.model)
    params = c.params_dict()
    surrogates = _surrogates(tuple(params.pop("surrogates", ())), task.model, model)
    layers = from_config(params.pop("defense", None))  # fresh for each task: its own store
    # The one construction path of the CLI, the bench and the Python API.
    attack = registry.build(c.attack, **{**params, "norm": c.norm, "eps": c.eps})
    work = None
    if task.work_dir is not None:
        key = task_key([e.id for e in cases])
        work = TaskWork(Path(task.work_dir), task.every, not attack.info.baseline, key)
    journal = None if work is None else work.journal
    view = make_view(c.threat, c.k)
    oracle = Oracle(model, view, max_queries=c.budget, journal=journal, middleware=layers)
    request = _request(task, surrogates)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    t0 = time.perf_counter()
    try:
        with metered(SurrogateMeter()) as meter:
            if work is None:
                res = attack.execute(oracle, request)
            else:
                res = work.run(attack, oracle, request)
    except StartImageError:
        # The start image does not show the target under this view: a failed case, with
        # the queries it spent looking.
        prov = case_provenance(c, model, oracle, work, cases)
        return [_no_start(task, oracle, worker, time.perf_counter() - t0, prov)]
    finally:
        if work is not None:
            work.close()
    out = []
    for i, (e, r) in enumerate(zip(cases, res.images, strict=True)):
        # Image i of the batch is image 0 of its own case, as in a single run.
        trace = [{**t.to_dict(), "image": 0} for t in res.trace if t.image == i]
        prov = _with_meter(case_provenance(e, model, oracle, work, cases), meter)
        out.append(
            CaseOutcome.from_image(
                e.id,
                r,
                worker=worker,
                adv_png=encode_png(res.x_adv[i]),
                trace=trace,
                provenance=_with_defense(prov, layers),
            )
        )
    return out


def _request(task: Task, surrogates: Sequence[Surrogate]) -> RunRequest:
    """A task's cases as one run: their images, targets (a batch is all one goal) and seeds."""
    cases = task.cases
    x = np.stack([decode_png(png) for png in [task.image_png, *(p for _, p in task.more)]])
    start = None if task.start_png is None else decode_png(task.start_png)[None]
    targets = [e.target_id for e in cases]
    untargeted = all(t < 0 for t in targets)  # -1: untargeted
    seeds = [e.seed for e in cases]
    tgt = None if untargeted else targets
    return RunRequest(x, tgt, seed=seeds, start=start, surrogates=surrogates)


def _no_start(
    task: Task, oracle: Oracle, worker: str, wall_s: float, prov: dict[str, Any]
) -> CaseOutcome:
    q = oracle.total_queries
    return CaseOutcome(
        case_id=task.case.id,
        success=False,
        queries=q,
        queries_at_success=None,
        queries_by_kind=oracle.queries_by_kind(0) if q else {},
        linf=0.0,
        l2=0.0,
        final_top1=None,
        final_topk=[],
        stop_reason="no_start_image",
        steps=0,
        wall_time_s=wall_s,
        worker=worker,
        adv_png=task.image_png,
        trace=[],
        provenance=prov,
    )


def _takes_start(c: CaseRow) -> bool:
    """Whether a case is given the grid's start image: attacks that start from one (PI, LO,
    HSJ), and surrogate-guided ones under labels (their guided start falls back to it, as
    ``--start-image`` on the CLI, before the bundled photos: a package photo's target class is
    rarely among those)."""
    info = registry.get(c.attack)
    return info.needs_start or (info.uses_surrogate and c.threat != "ql" and c.target_id >= 0)


def _with_meter(prov: dict[str, Any], meter: SurrogateMeter) -> dict[str, Any]:
    # The task's surrogate work (a batch shares it): what a case waited for besides queries.
    return {**prov, "surrogate_work": meter.block()} if meter.candidates else prov


def _with_defense(prov: dict[str, Any], layers: list[Middleware]) -> dict[str, Any]:
    # The defence in front of the target, with what it refused, flagged and banned.
    return {**prov, "defense": defense_block(layers)} if layers else prov


def run_case(task: Task) -> CaseOutcome:
    """Run one case (a task without a batch) through a fresh oracle."""
    one = Task(task.case, task.model, task.image_png, task.start_png, (), task.work_dir, task.every)
    return run_task(one)[0]


def _tasks(
    db: BenchDB, cases: list[CaseRow], work: Path | None = None, every: str = "60s"
) -> list[Task]:
    """One task per batch of cases that share a grid point; a case with a start image (PI,
    LO) or of a wrapped baseline (its library may not batch as it runs singly) runs alone."""

    cfg = json.loads(db.meta()["config_json"])
    images = {n: d["png"] for n, d in db.images().items()}
    groups: dict[tuple[Any, ...], list[CaseRow]] = {}
    for c in cases:
        info = registry.get(c.attack)
        # A defended case runs alone: a defence's store is shared by what it sees.
        alone = _takes_start(c) or info.baseline or "defense" in c.params_dict()
        key = (c.id,) if alone else (c.attack, c.threat, c.k, c.norm, c.eps, c.budget)
        groups.setdefault((*key, c.params, c.target_id < 0), []).append(c)
    tasks = []
    for group in groups.values():
        for i in range(0, len(group), BATCH):
            head, *rest = group[i : i + BATCH]
            start = images[head.start_image] if _takes_start(head) and head.start_image else None
            more = tuple((c, images[c.image]) for c in rest)
            where = None
            if work is not None:
                where = str(work / task_key([head.id, *(c.id for c in rest)]))
            tasks.append(Task(head, cfg["model"], images[head.image], start, more, where, every))
    # Batches first (stable otherwise): a run stopped part-way has finished the most cases.
    return sorted(tasks, key=lambda t: -len(t.cases))


@dataclass
class BenchSummary:
    done: int
    total: int
    succeeded: int
    ran: int  # cases run by this invocation
    queries: int  # queries spent by this invocation
    wall_s: float


def run_bench(
    config_path: str | Path,
    db_path: str | Path,
    *,
    workers: int = 1,
    ray_address: str = "local",
    use_ray: bool = False,
    on_case: Callable[[CaseRow, CaseOutcome, BenchSummary], None] | None = None,
    on_start: Callable[[BenchSummary], None] | None = None,
    only: Sequence[str] = (),
    checkpoint_every: str | None = "60s",
    confirm: Confirm | None = None,
) -> BenchSummary:
    """Run (or resume) the grid in ``config_path``, storing every case in ``db_path``.
    ``only``: run just these attacks' pending cases (the rest stay pending for a later run).
    ``checkpoint_every``: each task keeps a journal and checkpoints in ``<db>.work/`` (steps
    such as ``50``, or a time such as ``30s``), so a task killed mid-run resumes from its last
    checkpoint; None: neither, a killed task starts over. ``confirm`` hears the grid's size
    before anything is built, and may refuse it (see :mod:`.size`)."""
    if checkpoint_every is not None:
        Every.parse(checkpoint_every)  # a bad value is refused before anything runs
    if workers < 1:
        raise UserInputError(f"--workers must be >= 1, got {workers}")
    db_p = Path(db_path)
    if not db_p.parent.is_dir():
        raise UserInputError(f"--db: {db_p.parent} is not a directory")
    with prepare(Path(config_path), db_p, only, confirm) as db:
        pending = db.pending()
        if only:
            pending = [c for c in pending if c.attack in set(only)]
        done, total, ok = db.counts()
        summary = BenchSummary(done, total, ok, 0, 0, 0.0)
        if on_start is not None:
            on_start(summary)
        work = None if checkpoint_every is None else db_p.with_name(db_p.name + ".work")
        if not pending:
            db.finish()
            if work is not None:
                remove_work(work)
            return summary
        tasks = _tasks(db, pending, work, checkpoint_every or "60s")
        left = {t.work_dir: len(t.cases) for t in tasks if t.work_dir is not None}
        work_of = {c.id: t.work_dir for t in tasks for c in t.cases}
        execute = ray_executor(ray_address) if use_ray else processes if workers > 1 else serial
        by_id = {c.id: c for c in pending}
        t0 = time.perf_counter()
        for outcome in execute(run_task, tasks, workers):
            if db.record(outcome):
                summary.done += 1
                summary.ran += 1
                summary.succeeded += int(outcome.success)
                summary.queries += outcome.queries
            where = work_of.get(outcome.case_id)
            if where is not None:
                left[where] -= 1
                if not left[where]:  # every case of the task is recorded
                    remove_work(Path(where))
            summary.wall_s = time.perf_counter() - t0
            if on_case is not None:
                on_case(by_id[outcome.case_id], outcome, summary)
        if summary.done == summary.total:
            db.finish()
            if work is not None:
                remove_work(work)
        return summary
