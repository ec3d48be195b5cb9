"""`bbattack attack`: one image against a local model or a label API."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import typer
from numpy.typing import NDArray

from ..attacks.checkpoint import Every, Interrupted
from ..errors import TARGET_DOWN_REASONS, UserInputError
from ..images import load_image
from ..models import Classifier, load_model
from ..remote.spend import usd
from ..report import write_outputs
from ..results import AttackResult
from ..surrogates import resolve_surrogates
from ..targets.spec import with_options
from . import _attack_flags as flags
from . import _common, _model_flags
from ._common import (
    BackendOpt,
    Threat,
    app,
    err,
    fail,
    finite,
    guard,
    out,
    parse_params,
    print_error,
)
from ._job import AttackJob, check_job, make_attack, make_view
from ._leftovers import prune_killed
from ._outdir import DEFAULT_ROOT, OutDir, fresh_default
from ._progress import summary
from ._remote import (
    EXIT_REMOTE,
    AncestorsOpt,
    LabelsPathOpt,
    RemoteOptions,
    SchemaOpt,
    ScoresPathOpt,
    dry_run,
    remote_options,
)
from ._rundir import (
    RESUMABLE_STOPS,
    RunRecord,
    discard,
    finished_stop,
    job_config,
    remove_checkpoints,
    resumable_record,
)
from ._session import EXIT_INTERRUPTED, Plan, execute, rerun_command, resume_command

FloatArray = NDArray[np.float32]

__all__ = [
    "AttackJob",
    "RemoteOptions",
    "attack",
    "make_attack",
    "make_view",
    "run_attack",
]


def run_attack(job: AttackJob, model: Classifier | None = None) -> None:
    """Validate, claim the output directory, attack one image (or resume the run there),
    write the outputs, print a summary (or JSON). Everything a user can get wrong is refused
    before the first query."""
    info = check_job(job)
    params = parse_params(list(job.params))
    attack = make_attack(info, job.norm, job.eps, params)
    budget = job.max_queries or info.budget
    # off: a checkpoint only on Ctrl-C; a resume replays the run from its journal.
    every = _common.checkpoint_every(job.checkpoint_every) or Every(seconds=math.inf)
    if job.resume and job.overwrite:
        raise UserInputError("--resume continues a run, --force starts over: give one")
    if job.resume and info.baseline:
        raise UserInputError(
            f"--resume: {info.name} runs inside its library and cannot be resumed exactly; "
            "run it again with --force (its journal answers the queries already paid)"
        )
    x = load_image(job.image)
    start = load_image(job.start_image) if job.start_image is not None else None
    if job.remote is not None and job.remote.dry_run:
        rc = dry_run(job.remote, budget)
        if rc:
            raise typer.Exit(rc)
        return
    if job.out_dir is None:
        prune_killed(DEFAULT_ROOT)  # what runs killed before their first query left there
    out_path = job.out_dir if job.out_dir is not None else fresh_default()
    record = RunRecord(
        config=job_config(job, attack, budget, x, start),
        command=list(_common.ARGV or []),
        journal=RunRecord.journal_name(out_path, job.remote.journal if job.remote else None),
    )
    # inputs: a resume writes a damaged inputs.npz again from the command's own images.
    with OutDir(out_path, overwrite=job.overwrite, resume=job.resume, inputs=(x, start)) as claimed:
        if job.resume:
            resumed = _resume_from(out_path, record)
            if resumed is None:
                claimed.keep()
                return
            record = resumed
        if job.remote is None:
            name = job.model or "efficientnet-lite0"
            model = model or load_model(name, backend=job.backend.value)
            if job.k is not None and job.k > model.num_classes:
                raise UserInputError(f"--k {job.k}: the model has only {model.num_classes} classes")
        # A bad surrogate (or the target itself) is refused before the first query.
        surrogates = resolve_surrogates(job.surrogates, model) if job.surrogates else []
        if job.out_dir is None:
            err.print(f"writing to {out_path}", markup=False, highlight=False)
        plan = Plan(out_path, record, every, job.resume)
        journal, existed = record.journal_path(out_path), record.journal_path(out_path).exists()
        try:
            result, extra, failure = execute(job, plan, model, attack, budget, x, start, surrogates)
        except (UserInputError, typer.Exit):
            if not job.resume:
                discard(out_path, journal, existed, keep_paid=job.remote is not None)
            raise
        except (Interrupted, KeyboardInterrupt):
            if not (out_path / "run.json").exists():  # stopped before the first query
                discard(out_path, journal, existed, keep_paid=False)
                err.print("interrupted before the first query")
                raise typer.Exit(EXIT_INTERRUPTED) from None
            claimed.keep()
            how = f"resume with: {resume_command(out_path)}"
            err.print(f"interrupted; {how}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        paths = write_outputs(result, x, out_path, extra=extra, curve=failure[1])
        remove_checkpoints(out_path)
        claimed.keep()
    _tell(job, result, extra, paths, failure[0], out_path)


def _resume_from(out_path: Path, record: RunRecord) -> RunRecord | None:
    """The run to go on with in ``out_path`` (refused if made with another config); None,
    said on stdout, where its result is final."""
    old = resumable_record(out_path, record)
    stop = finished_stop(out_path)
    if stop is not None and stop not in RESUMABLE_STOPS:
        out.print(
            f"{out_path} holds a finished result (stop: {stop}): nothing to resume; to run it "
            f"again: {rerun_command(out_path)} (its journal answers the queries already paid, "
            "free)",
            markup=False,
            soft_wrap=True,
        )
        return None
    if stop is not None:  # stopped by its target (exit 3): go on past that stop
        what = f"resuming {out_path}, stopped early ({stop}): the journal answers"
        err.print(f"{what} what was paid for", markup=False, highlight=False, soft_wrap=True)
    return old


def _tell(
    job: AttackJob,
    result: AttackResult,
    extra: dict[str, Any],
    paths: dict[str, Path],
    failure: str | None,
    out_path: Path,
) -> None:
    """The summary (or result.json on stdout); exit 3 where the target stopped the run."""
    r = result.images[0]
    if job.as_json:
        sys.stdout.write(json.dumps({**result.image_json(0), **extra}, indent=2) + "\n")
    else:
        summary(result, paths, ids=job.remote is None)
        if "remote" in extra:
            rem = extra["remote"]
            price = rem["price_per_1000"]
            cost = (
                f"cost {usd(rem['cost_usd'])} at ${price:.2f}/1000"
                if price is not None
                else "not priced per image (give --price-per-1000 for a cost)"
            )
            lost = rem.get("lost_billed") or 0
            out.print(
                f"paid queries: {rem['paid_queries']:,} (journal hits: "
                f"{rem['cached_queries']:,}"
                + (f"; billed but lost: {lost:,}" if lost else "")
                + f"); {cost}; {rem['retries']:,} retries",
                highlight=False,
            )
    if r.stop_reason in TARGET_DOWN_REASONS:
        print_error(
            f"the attack stopped early ({r.stop_reason}): {failure or 'the target stopped'}; "
            f"the best result so far is in {out_path}; to go on once it answers: "
            f"{resume_command(out_path)}"
        )
        raise typer.Exit(EXIT_REMOTE)


@app.command()
def attack(
    image: flags.Image,
    target: flags.Target = None,
    threat: flags.ThreatModel = Threat.ql,
    k: flags.K = None,
    attack_name: flags.AttackName = None,
    norm: flags.Norm = "linf",
    eps: flags.Eps = 0.05,
    max_queries: flags.MaxQueries = None,
    start_image: flags.StartImage = None,
    untargeted: flags.Untargeted = False,
    seed: flags.Seed = 0,
    out_dir: flags.OutDir = None,
    force: flags.Force = False,
    resume: flags.Resume = None,
    checkpoint_every: flags.CheckpointEvery = "60s",
    as_json: flags.AsJson = False,
    backend: flags.Backend = BackendOpt.auto,
    param: flags.Param = None,
    success: flags.Success = "top1",
    endpoint: flags.Endpoint = None,
    schema: SchemaOpt = "gcv",
    api_key: flags.ApiKey = None,
    max_cost: flags.MaxCost = None,
    price_per_1000: flags.PricePer1000 = None,
    journal: flags.JournalPath = None,
    dry_run: flags.DryRun = False,
    max_results: flags.MaxResults = None,
    labels_path: LabelsPathOpt = None,
    scores_path: ScoresPathOpt = None,
    ancestors: AncestorsOpt = False,
    model_name: flags.ModelName = None,
    surrogate: flags.Surrogate = None,
    input_size: _model_flags.InputSize = None,
    mean: _model_flags.Mean = None,
    std: _model_flags.Std = None,
    scale: _model_flags.Scale = None,
    channels: _model_flags.Channels = None,
    layout: _model_flags.Layout = None,
    resize: _model_flags.Resize = None,
    labels: _model_flags.Labels = None,
    outputs: _model_flags.Outputs = None,
    defense: flags.Defense = None,
    adaptive: flags.Adaptive = False,
) -> None:
    """Attack one image; writes adv.png, figure.png, trace.png, result.json and trace.jsonl
    (and keeps run.json, inputs.npz, journal.sqlite and, while it runs, checkpoints/)."""
    for name, value in (
        ("--eps", eps),
        ("--max-cost", max_cost),
        ("--price-per-1000", price_per_1000),
    ):
        guard(finite, name=name, value=value)
    remote = _remote(
        endpoint=endpoint,
        api_key=api_key,
        max_cost=max_cost,
        price_per_1000=price_per_1000,
        journal=journal,
        dry_run=dry_run,
        max_results=max_results,
        schema=schema,
        labels_path=labels_path,
        scores_path=scores_path,
        ancestors=ancestors,
        every_class=threat is Threat.ql,
    )
    if resume is not None and out_dir is not None and out_dir.resolve() != resume.resolve():
        raise fail("--resume DIR is the run's --out: give one of them")
    pre = {"input_size": input_size, "mean": mean, "std": std, "scale": scale}
    pre |= {"channels": channels, "layout": layout, "resize": resize, "labels": labels}
    pre["outputs"] = outputs  # in the flags' order: it is the order of the spec's options
    job = AttackJob(
        image=image,
        target=target,
        threat=threat,
        k=k,
        eps=eps,
        max_queries=max_queries,
        start_image=start_image,
        untargeted=untargeted,
        seed=seed,
        out_dir=resume if resume is not None else out_dir,
        as_json=as_json,
        backend=backend,
        params=tuple(param or []),
        success=success,
        remote=remote,
        attack=attack_name,
        norm=norm,
        overwrite=force,
        model=with_options(model_name, **pre),
        surrogates=tuple(surrogate or []),
        resume=resume is not None,
        checkpoint_every=checkpoint_every,
        defenses=tuple(defense or []),
        adaptive=adaptive,
    )
    guard(run_attack, job=job)


def _remote(
    *,
    endpoint: str | None,
    api_key: str | None,
    max_cost: float | None,
    price_per_1000: float | None,
    journal: Path | None,
    dry_run: bool,
    max_results: int | None,
    schema: str,
    labels_path: str | None,
    scores_path: str | None,
    ancestors: bool,
    every_class: bool = False,
) -> RemoteOptions | None:
    """The label API the flags name (``--endpoint`` or $BBATTACK_ENDPOINT), or None; a flag
    that only means something for a label API, given without one, is refused."""
    ep = endpoint or os.environ.get("BBATTACK_ENDPOINT") or None
    if ep is not None:
        opts = remote_options(
            endpoint=ep,
            api_key=api_key or os.environ.get("BBATTACK_API_KEY") or None,
            max_cost=max_cost,
            price_per_1000=price_per_1000,
            journal=journal,
            dry_run=dry_run,
            max_results=10 if max_results is None else max_results,
            schema=schema,
            labels_path=labels_path,
            scores_path=scores_path,
            ancestors=ancestors,
            every_class=every_class,
        )
        if every_class and (max_results is None or max_results < 2):
            # Too few slots costs a billed query before the run can tell: refused first.
            raise fail(
                "--threat ql over --endpoint: give --max-results N, the API's number of "
                "classes (1000 for an ImageNet model)"
            )
        return opts
    if dry_run or journal is not None or max_cost is not None or api_key is not None:
        raise fail("--dry-run, --journal, --max-cost and --api-key need --endpoint")
    if schema != "gcv" or labels_path or scores_path or ancestors:
        raise fail("--schema, --labels-path, --scores-path and --ancestors need --endpoint")
    return None
