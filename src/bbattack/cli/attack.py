"""`bbattack attack`: one image against a local model or a label API."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from numpy.typing import NDArray
from pydantic import ValidationError

from .. import zoo
from ..attacks import registry
from ..attacks.balls import make_ball
from ..attacks.checks import check_surrogates
from ..attacks.goals import Within
from ..errors import TARGET_DOWN_REASONS, UserInputError
from ..images import load_image
from ..models import Classifier, load_model
from ..oracle import Labels, Oracle, Scores, TopK, View
from ..remote import RemoteError
from ..report import write_outputs
from ..results import AttackResult
from ..surrogates import Surrogate, resolve_surrogates, surrogate_block
from ._common import (
    SEED_MAX,
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
    validation_message,
)
from ._outdir import OutDir, fresh_default
from ._progress import progress_run, summary
from ._remote import EXIT_REMOTE, RemoteOptions, dry_run, open_client, preflight, remote_block
from ._watch import OriginalCurve, RetryNotes, Watched

__all__ = [
    "AttackJob",
    "RemoteOptions",
    "attack",
    "make_attack",
    "make_view",
    "run_attack",
]


def make_view(threat: Threat, k: int) -> View:
    """The view a local model is attacked through."""
    if k < 1:
        raise UserInputError(f"--k must be >= 1, got {k}")
    if threat is Threat.ql:
        return Scores()
    return TopK(k) if threat is Threat.pi else Labels(k)


def make_attack(
    info: registry.AttackInfo, norm: str, eps: float, params: dict[str, Any]
) -> registry.Runnable:
    for axis in ("eps", "norm"):
        if axis in params:
            raise UserInputError(f"give --{axis}, not --param {axis}=...")
    try:
        return registry.build(info.name, norm=norm, eps=eps, **params)
    except ValidationError as e:
        raise UserInputError(validation_message(e)) from None
    except TypeError as e:
        raise UserInputError(str(e)) from None


@dataclass(frozen=True)
class AttackJob:
    """Everything ``bbattack attack`` was asked to do."""

    image: Path
    target: str | None
    threat: Threat = Threat.ql
    k: int | None = None
    eps: float = 0.05
    max_queries: int | None = None
    start_image: Path | None = None
    untargeted: bool = False
    seed: int = 0
    out_dir: Path | None = None  # None: a fresh timestamped directory under bbattack-out/
    as_json: bool = False
    backend: BackendOpt = BackendOpt.auto
    params: tuple[str, ...] = ()
    success: str = "top1"
    remote: RemoteOptions | None = None
    attack: str | None = None  # None: the threat model's default attack
    norm: str = "linf"
    overwrite: bool = False  # replace a result already in out_dir
    model: str | None = None  # a built-in target (None: lite0); not with a label API
    surrogates: tuple[str, ...] = ()  # built-in names, module:function, or "all"

    @property
    def goal(self) -> Within:
        return "topk" if self.success == "topk" else "top1"  # validated by _check_job


def _check_job(job: AttackJob) -> registry.AttackInfo:
    """Every check that needs no file and no query; returns the attack to run."""
    info = (
        registry.get(job.attack)
        if job.attack
        else registry.default_attack(job.threat.value, job.untargeted, bool(job.surrogates))
    )
    check_surrogates(info, job.surrogates)
    if job.model is not None:
        if job.remote is not None:
            raise UserInputError("--model names a local target; a label API is its own model")
        zoo.canonical(job.model)
    try:
        make_ball(job.norm, job.eps)
    except UserInputError as e:
        raise UserInputError(f"--eps: {e}") from None
    why = registry.view_refusal(info, make_view(job.threat, job.k or 1), job.norm)
    if why is not None:
        raise UserInputError(why)
    if job.k is not None and job.k < 1:
        raise UserInputError(f"--k must be >= 1, got {job.k}")
    if job.max_queries is not None and job.max_queries < 1:
        raise UserInputError(f"--max-queries must be >= 1, got {job.max_queries}")
    if job.untargeted and job.target is not None:
        raise UserInputError("--untargeted and --target are mutually exclusive")
    if not job.untargeted and job.target is None:
        raise UserInputError("give --target NAME|ID, or --untargeted")
    if job.untargeted and not info.untargeted:
        threat_of = {v: t for t, v in registry.THREAT_VIEWS.items()}
        can = [
            f"{i.name} (--threat {threat_of[i.views[0]]})"
            for i in registry.all_attacks().values()
            if i.untargeted
        ]
        raise UserInputError(
            f"{info.name} is a targeted attack; --untargeted needs one of: {', '.join(can)}"
        )
    # A surrogate-guided PI attack falls back to the start image where no transfer shows.
    if job.start_image is not None and not (info.needs_start or info.uses_surrogate):
        raise UserInputError(
            f"--start-image applies to attacks that start in the target class; {info.name} does not"
        )
    if job.success not in ("top1", "topk"):
        raise UserInputError(f"--success must be top1 or topk, got {job.success!r}")
    if job.success == "topk" and job.threat is Threat.ql:
        raise UserInputError("--success topk applies to --threat pi or lo")
    if job.remote is not None and job.threat is Threat.ql:
        raise UserInputError(
            "a label API reveals labels (and scores), not a score vector: use --threat pi or lo"
        )
    return info


def run_attack(job: AttackJob, model: Classifier | None = None) -> None:
    """Validate, claim the output directory, attack one image, write the outputs, print a
    summary (or JSON). Everything a user can get wrong is refused before the first query."""
    info = _check_job(job)
    params = parse_params(list(job.params))
    attack = make_attack(info, job.norm, job.eps, params)
    budget = job.max_queries or info.budget
    x = load_image(job.image)
    start = load_image(job.start_image) if job.start_image is not None else None
    if job.remote is not None and job.remote.dry_run:
        rc = dry_run(job.remote, budget)
        if rc:
            raise typer.Exit(rc)
        return
    if job.remote is None:
        model = model or load_model(job.model or "efficientnet-lite0", backend=job.backend.value)
    # A bad surrogate (or the target itself) is refused before the first query.
    surrogates = resolve_surrogates(job.surrogates, model) if job.surrogates else []
    out_path = job.out_dir if job.out_dir is not None else fresh_default()
    with OutDir(out_path, overwrite=job.overwrite) as claimed:
        if job.out_dir is None:
            err.print(f"writing to {out_path}", markup=False, highlight=False)
        result, extra, failure = _attack(job, model, attack, budget, x, start, surrogates)
        paths = write_outputs(result, x, out_path, extra=extra, curve=failure[1])
        claimed.keep()
    r = result.images[0]
    if job.as_json:
        sys.stdout.write(json.dumps({**result.image_json(0), **extra}, indent=2) + "\n")
    else:
        summary(result, paths, ids=job.remote is None)
        if "remote" in extra:
            rem = extra["remote"]
            out.print(
                f"paid queries: {rem['paid_queries']:,} (journal hits: "
                f"{rem['cached_queries']:,}); cost ${rem['cost_usd']:.2f} at "
                f"${rem['price_per_1000']:.2f}/1000; {rem['retries']:,} retries",
                highlight=False,
            )
    if r.stop_reason in TARGET_DOWN_REASONS:
        print_error(
            f"the attack stopped early ({r.stop_reason}): {failure[0] or 'the target stopped'}; "
            f"the best result so far is in {out_path}"
        )
        raise typer.Exit(EXIT_REMOTE)


def _attack(
    job: AttackJob,
    model: Classifier | None,
    attack: registry.Runnable,
    budget: int,
    x: NDArray[np.float32],
    start: NDArray[np.float32] | None,
    surrogates: Sequence[Surrogate] = (),
) -> tuple[AttackResult, dict[str, Any], tuple[str | None, OriginalCurve]]:
    """Run the attack on its target; the result, result.json's extra blocks, and what the
    command watched (the target's last failure, the clean class's curve)."""
    extra: dict[str, Any] = {}
    retries = RetryNotes()
    client = None
    try:
        if job.remote is not None:
            from ..targets import LabelTarget

            client = open_client(job.remote, budget, retries)
            try:
                preflight(client)  # free: a dead endpoint or a bad key costs nothing
            except RemoteError as e:
                print_error(f"{e}; no image was sent")
                raise typer.Exit(EXIT_REMOTE) from None
            labels = LabelTarget(client, name=job.remote.endpoint)
            assert job.target is not None
            tgt: int | None = labels.class_names.resolve(job.target)
            watched = Watched(labels)
            view: View = (
                TopK(job.k) if job.threat is Threat.pi else Labels(10 if job.k is None else job.k)
            )
        else:
            local = model or load_model(backend=job.backend.value)
            assert local.class_names is not None
            tgt = None if job.target is None else local.class_names.resolve(job.target)
            watched = Watched(local)
            view = make_view(job.threat, 1 if job.k is None else job.k)
        oracle = Oracle(watched, view, max_queries=budget, hooks=[watched.hook])
        result = progress_run(
            attack,
            oracle,
            x,
            tgt,
            job.seed,
            start,
            quiet=False,
            success=job.goal,
            watched=watched,
            retries=retries,
            surrogates=surrogates,
        )
    finally:
        if client is not None:
            client.close()  # waits for calls in flight: the paid count is final after this
    if client is not None and job.remote is not None:
        extra["remote"] = remote_block(client, job.remote)
    if surrogates:
        extra["surrogates"] = surrogate_block(surrogates, model if job.remote is None else None)
    return result, extra, (watched.failure, watched.curve)


@app.command()
def attack(
    image: Annotated[Path, typer.Argument(help="image to attack")],
    target: Annotated[str | None, typer.Option(help="target class name or id (or label)")] = None,
    threat: Annotated[Threat, typer.Option(help="ql: scores, pi: top-k scores, lo: labels")] = (
        Threat.ql
    ),
    k: Annotated[
        int | None,
        typer.Option("--k", help="labels revealed per query (default 1; a label API: all)"),
    ] = None,
    attack_name: Annotated[
        str | None,
        typer.Option(
            "--attack", help="attack by name (`bbattack attacks`); default: the threat's own"
        ),
    ] = None,
    norm: Annotated[str, typer.Option(help="the ball: linf or l2")] = "linf",
    eps: Annotated[float, typer.Option(help="radius of the ball in [0, 1] pixel units")] = 0.05,
    max_queries: Annotated[
        int | None, typer.Option(help="hard query budget (default: the attack's own)")
    ] = None,
    start_image: Annotated[
        Path | None,
        typer.Option(
            help="PI/LO start image of the target class (default: search the bundled photos)"
        ),
    ] = None,
    untargeted: Annotated[bool, typer.Option(help="any wrong class will do")] = False,
    seed: Annotated[int, typer.Option(help="random seed", min=0, max=SEED_MAX)] = 0,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="output directory (default: bbattack-out/<date-time>)"),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="replace a result already in --out (else: refused)")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print result.json to stdout")] = False,
    backend: Annotated[BackendOpt, typer.Option(help="inference backend")] = BackendOpt.auto,
    param: Annotated[
        list[str] | None,
        typer.Option(help="attack hyperparameter KEY=VALUE (repeatable), e.g. samples=100"),
    ] = None,
    success: Annotated[
        str, typer.Option(help="PI/LO success: target is the top label (top1) or in the top-k")
    ] = "top1",
    endpoint: Annotated[
        str | None,
        typer.Option(help="attack a Cloud-Vision-style label API (env BBATTACK_ENDPOINT)"),
    ] = None,
    api_key: Annotated[str | None, typer.Option(help="API key (env BBATTACK_API_KEY)")] = None,
    max_cost: Annotated[
        float | None, typer.Option(help="spend cap in USD for the label API")
    ] = None,
    price_per_1000: Annotated[
        float, typer.Option(help="USD per 1,000 images (Cloud Vision labels: 1.50)")
    ] = 1.50,
    journal: Annotated[
        Path | None, typer.Option(help="query journal (SQLite): cache and audit log")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="print the expected queries and cost, send nothing")
    ] = False,
    max_results: Annotated[
        int, typer.Option(help="labels asked of the label API per image (maxResults)")
    ] = 10,
    model_name: Annotated[
        str | None,
        typer.Option("--model", help="built-in target model: lite0 (default), lite1, lite2"),
    ] = None,
    surrogate: Annotated[
        list[str] | None,
        typer.Option(
            help="local surrogate model (repeatable): lite0|lite1|lite2, module:function, or "
            "all (every built-in model but the target); free, never the target"
        ),
    ] = None,
) -> None:
    """Attack one image; writes adv.png, figure.png, trace.png, result.json and trace.jsonl."""
    for name, value in (
        ("--eps", eps),
        ("--max-cost", max_cost),
        ("--price-per-1000", price_per_1000),
    ):
        guard(finite, name=name, value=value)
    ep = endpoint or os.environ.get("BBATTACK_ENDPOINT") or None
    remote = None
    if ep is not None:
        remote = RemoteOptions(
            endpoint=ep,
            api_key=api_key or os.environ.get("BBATTACK_API_KEY") or None,
            max_cost=max_cost,
            price_per_1000=price_per_1000,
            journal=journal,
            dry_run=dry_run,
            max_results=max_results,
        )
    elif dry_run or journal is not None or max_cost is not None or api_key is not None:
        raise fail("--dry-run, --journal, --max-cost and --api-key need --endpoint")
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
        out_dir=out_dir,
        as_json=as_json,
        backend=backend,
        params=tuple(param or []),
        success=success,
        remote=remote,
        attack=attack_name,
        norm=norm,
        overwrite=overwrite,
        model=model_name,
        surrogates=tuple(surrogate or []),
    )
    guard(run_attack, job=job)
