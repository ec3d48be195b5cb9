"""The ``bbattack`` command line: classify, attack, demo, serve, bench, report.

User errors (bad files, unknown classes, bad flags) print one line and exit with code 2,
and leave no output behind.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from numpy.typing import NDArray
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .attacks import StepInfo, registry
from .attacks.goals import Within
from .errors import BBAttackError, UserInputError
from .images import bundled_photos, load_image
from .models import Classifier, load_model
from .oracle import Labels, Oracle, Scores, TopK, View
from .report import write_outputs
from .results import AttackResult, ClassRef, TopKEntry

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Black-box adversarial attacks with limited queries and information.",
)
err = Console(stderr=True)
out = Console()

# typer vendors click in recent releases; find its exception base without a private import.
_CLICK_ERROR: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

DEFAULT_BUDGET = {"ql": 20_000, "pi": 100_000, "lo": 1_000_000}


class Threat(StrEnum):
    ql = "ql"
    pi = "pi"
    lo = "lo"


class BackendOpt(StrEnum):
    auto = "auto"
    onnx = "onnx"
    torch = "torch"


def fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _validation_message(e: ValidationError) -> str:
    first = e.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "config"
    return f"invalid {loc}: {first['msg']}"


def _parse_params(params: list[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for p in params:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise UserInputError(f"--param expects KEY=VALUE, got {p!r}")
        try:
            parsed[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key.strip()] = value
    return parsed


def make_view(threat: Threat, k: int) -> View:
    """The view a local model is attacked through."""
    if k < 1:
        raise UserInputError(f"--k must be >= 1, got {k}")
    if threat is Threat.ql:
        return Scores()
    return TopK(k) if threat is Threat.pi else Labels(k)


def make_attack(threat: Threat, eps: float, params: dict[str, Any]) -> registry.Runnable:
    if not 0.0 < eps <= 1.0:
        raise UserInputError(f"--eps must be in (0, 1], got {eps}")
    try:
        return registry.build(registry.default_attack(threat.value).name, eps=eps, **params)
    except ValidationError as e:
        raise UserInputError(_validation_message(e)) from None
    except TypeError as e:
        raise UserInputError(str(e)) from None


def _progress_run(
    attack: registry.Runnable,
    oracle: Oracle,
    x: NDArray[np.float32],
    target: int | None,
    seed: int,
    start: NDArray[np.float32] | None,
    quiet: bool,
    success: Within = "top1",
) -> AttackResult:
    budget = oracle.max_queries or 0
    show_rank = not oracle.view.reveals_scores
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} queries"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=False,
    )

    def on_step(info: StepInfo) -> None:
        if show_rank:
            r = int(info.target_rank[0])
            status = f"target rank {'-' if r < 0 else r + 1}"
        else:
            p = float(info.target_prob[0])
            status = "target p=-" if np.isnan(p) else f"target p={p:.3f}"
        progress.update(
            task, completed=int(info.queries[0]), status=f"{status}  ε={float(info.eps[0]):.4f}"
        )

    task = progress.add_task(f"{attack.name.upper()} attack", total=budget, status="starting")
    started = False

    def first_step(info: StepInfo) -> None:
        # Start drawing only once init (start-image checks) has passed.
        nonlocal started
        if not started:
            progress.start()
            started = True
        on_step(info)

    try:
        result = attack.run(
            oracle, x, target, seed=seed, start=start, success=success, on_step=first_step
        )
        progress.update(task, completed=result.images[0].queries)
    finally:
        if started:
            progress.stop()
    return result


def _summary(result: AttackResult, paths: dict[str, Path], ids: bool = True) -> None:
    """Human summary; ``ids=False`` for label APIs, whose label ids mean nothing to a reader."""
    r = result.images[0]

    def show(ref: ClassRef | TopKEntry) -> str:
        return f"{ref.name} ({ref.id})" if ids else f"{ref.name}"

    verdict = "[bold green]SUCCESS[/]" if r.success else "[bold red]FAILED[/]"
    tgt = show(r.target) if r.target else "any other class (untargeted)"
    orig = show(r.original) if r.original else "?"
    out.print(f"{verdict}  {result.attack.upper()} attack: {orig} → {tgt}")
    qs = f"{r.queries_at_success:,}" if r.queries_at_success is not None else "-"
    out.print(
        f"queries: {r.queries:,} used, first success at {qs}; "
        f"L∞ = {r.linf:.4f} (ε = {r.eps:g}), L2 = {r.l2:.3f}; "
        f"{r.wall_time_s:.1f} s; stop: {r.stop_reason}"
    )
    table = Table(title="final top-k (8-bit image, as the oracle reveals it)", title_justify="left")
    table.add_column("rank")
    table.add_column("class")
    table.add_column("score")
    for i, e in enumerate(r.final_topk, 1):
        table.add_row(str(i), show(e), "-" if e.score is None else f"{e.score:.4f}")
    out.print(table)
    for name, p in paths.items():
        out.print(f"  {name:12s} {p}")


@dataclass(frozen=True)
class RemoteOptions:
    """Where and how to reach a Cloud-Vision-style label API."""

    endpoint: str
    api_key: str | None = None
    max_cost: float | None = None
    price_per_1000: float = 1.50
    journal: Path | None = None
    dry_run: bool = False
    max_results: int = 10


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
    out_dir: Path = Path("bbattack-out")
    as_json: bool = False
    backend: BackendOpt = BackendOpt.auto
    params: tuple[str, ...] = ()
    success: str = "top1"
    remote: RemoteOptions | None = None

    @property
    def goal(self) -> Within:
        return "topk" if self.success == "topk" else "top1"  # validated by _check_job


def _check_job(job: AttackJob) -> None:
    if job.k is not None and job.k < 1:
        raise UserInputError(f"--k must be >= 1, got {job.k}")
    if job.max_queries is not None and job.max_queries < 1:
        raise UserInputError(f"--max-queries must be >= 1, got {job.max_queries}")
    if job.untargeted and job.target is not None:
        raise UserInputError("--untargeted and --target are mutually exclusive")
    if not job.untargeted and job.target is None:
        raise UserInputError("give --target NAME|ID, or --untargeted")
    if job.untargeted and job.threat is not Threat.ql:
        raise UserInputError(
            f"{job.threat.value} is a targeted attack; --untargeted needs --threat ql"
        )
    if job.start_image is not None and job.threat is Threat.ql:
        raise UserInputError("--start-image applies to --threat pi or lo")
    if job.success not in ("top1", "topk"):
        raise UserInputError(f"--success must be top1 or topk, got {job.success!r}")
    if job.success == "topk" and job.threat is Threat.ql:
        raise UserInputError("--success topk applies to --threat pi or lo")
    if job.remote is not None and job.threat is Threat.ql:
        raise UserInputError(
            "a label API reveals labels (and scores), not a score vector: use --threat pi or lo"
        )


def run_attack(job: AttackJob, model: Classifier | None = None) -> None:
    """Validate, attack one image, write the outputs, print a summary (or JSON)."""
    _check_job(job)
    params = _parse_params(list(job.params))
    attack = make_attack(job.threat, job.eps, params)
    budget = job.max_queries or DEFAULT_BUDGET[job.threat.value]
    x = load_image(job.image)
    start = load_image(job.start_image) if job.start_image is not None else None
    extra: dict[str, Any] = {}
    if job.remote is not None:
        from .remote import HttpLabelTarget
        from .targets import LabelTarget

        r = job.remote
        client = HttpLabelTarget(
            r.endpoint,
            r.api_key,
            max_results=r.max_results,
            max_queries=budget,
            max_cost=r.max_cost,
            price_per_1000=r.price_per_1000,
            journal=r.journal,
        )
        if r.dry_run:
            out.print(
                f"dry run, nothing sent: {client.describe_plan(budget)} "
                f"(the --max-queries budget; a successful attack stops earlier)"
            )
            client.close()
            return
        labels = LabelTarget(client, name=r.endpoint)
        assert job.target is not None
        tgt: int | None = labels.class_names.resolve(job.target)
        target_obj: Classifier | LabelTarget = labels
        view: View = (
            TopK(job.k) if job.threat is Threat.pi else Labels(10 if job.k is None else job.k)
        )
    else:
        target_obj = model or load_model(backend=job.backend.value)
        assert target_obj.class_names is not None
        tgt = None if job.target is None else target_obj.class_names.resolve(job.target)
        view = make_view(job.threat, 1 if job.k is None else job.k)
    oracle = Oracle(target_obj, view, max_queries=budget)
    try:
        result = _progress_run(
            attack, oracle, x, tgt, job.seed, start, quiet=False, success=job.goal
        )
    finally:
        if job.remote is not None:
            client.close()
    if job.remote is not None:
        extra["remote"] = {
            "endpoint": job.remote.endpoint,
            "paid_queries": client.paid_queries,
            "cached_queries": client.cached_queries,
            "cost_usd": client.cost,
            "price_per_1000": job.remote.price_per_1000,
        }
    paths = write_outputs(result, x, job.out_dir, extra=extra)
    if job.as_json:
        sys.stdout.write(json.dumps({**result.image_json(0), **extra}, indent=2) + "\n")
    else:
        _summary(result, paths, ids=job.remote is None)
        if "remote" in extra:
            rem = extra["remote"]
            out.print(
                f"paid queries: {rem['paid_queries']:,} (journal hits: "
                f"{rem['cached_queries']:,}); cost ${rem['cost_usd']:.2f} at "
                f"${rem['price_per_1000']:.2f}/1000"
            )


def _guard(fn: Callable[..., None], **kwargs: Any) -> None:
    """Run a command body; user errors become one line on stderr and exit code 2."""
    try:
        fn(**kwargs)
    except BBAttackError as e:
        if isinstance(e, UserInputError):
            raise fail(str(e)) from None
        raise
    except ValidationError as e:
        raise fail(_validation_message(e)) from None


@app.command()
def classify(
    image: Annotated[Path, typer.Argument(help="image file")],
    k: Annotated[int, typer.Option("--k", help="how many classes to show")] = 5,
    backend: Annotated[BackendOpt, typer.Option(help="inference backend")] = BackendOpt.auto,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Print the model's top-k classes for an image."""

    def go() -> None:
        if k < 1:
            raise UserInputError(f"--k must be >= 1, got {k}")
        x = load_image(image)
        model: Classifier = load_model(backend=backend.value)
        names = model.class_names
        assert names is not None
        p = model(x[None])[0]
        top = np.argsort(-p)[:k]
        rows = [{"id": int(i), "name": names.name(int(i)), "score": float(p[i])} for i in top]
        if as_json:
            sys.stdout.write(json.dumps(rows, indent=2) + "\n")
            return
        table = Table(title=f"{image.name}: top-{k}", title_justify="left")
        for col in ("rank", "id", "class", "probability"):
            table.add_column(col)
        for i, r in enumerate(rows, 1):
            table.add_row(str(i), str(r["id"]), str(r["name"]), f"{r['score']:.4f}")
        out.print(table)

    _guard(go)


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
    eps: Annotated[float, typer.Option(help="L∞ radius in [0, 1] pixel units")] = 0.05,
    max_queries: Annotated[
        int | None, typer.Option(help="hard query budget (default: ql 20k, pi 100k, lo 1M)")
    ] = None,
    start_image: Annotated[
        Path | None,
        typer.Option(
            help="PI/LO start image of the target class (default: search the bundled photos)"
        ),
    ] = None,
    untargeted: Annotated[bool, typer.Option(help="any wrong class will do (QL only)")] = False,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    out_dir: Annotated[Path, typer.Option("--out", help="output directory")] = Path("bbattack-out"),
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
) -> None:
    """Attack one image; writes adv.png, figure.png, trace.png, result.json and trace.jsonl."""
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
    )
    _guard(run_attack, job=job)


@app.command()
def tune(
    backend: Annotated[BackendOpt, typer.Option(help="inference backend")] = BackendOpt.auto,
) -> None:
    """Re-measure the fastest model batch size on this machine and cache it."""

    def go() -> None:
        from .tuning import tune as measure

        model = load_model(backend=backend.value)
        best, speeds = measure(model)
        table = Table(title=f"{model.name} on {model.backend}", title_justify="left")
        table.add_column("batch size")
        table.add_column("images/s")
        for bs, v in speeds.items():
            table.add_row(f"{bs}{' (chosen)' if bs == best else ''}", f"{v:.0f}")
        out.print(table)

    _guard(go)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to bind (loopback by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8080,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key", help="accepted API key (repeatable; default: $BBATTACK_API_KEYS)"
        ),
    ] = None,
    quota: Annotated[int | None, typer.Option(help="images billable per key")] = None,
    rate: Annotated[float | None, typer.Option(help="calls per second per key")] = None,
    threshold: Annotated[float, typer.Option(help="lowest label score returned")] = 0.2,
    max_body_bytes: Annotated[int, typer.Option(help="request size limit (413 above)")] = (
        10 * 1024 * 1024
    ),
    backend: Annotated[BackendOpt, typer.Option(help="inference backend")] = BackendOpt.auto,
) -> None:
    """Serve the built-in model behind a Cloud-Vision-style POST /v1/images:annotate."""

    def go() -> None:
        from .service import serve as run_service

        if quota is not None and quota < 1:
            raise UserInputError(f"--quota must be >= 1, got {quota}")
        if rate is not None and rate <= 0:
            raise UserInputError(f"--rate must be > 0, got {rate}")
        run_service(
            host,
            port,
            backend=backend.value,
            api_keys=api_key or None,
            quota=quota,
            rate=rate,
            max_body_bytes=max_body_bytes,
            threshold=threshold,
        )

    _guard(go)


@dataclass(frozen=True)
class DemoSpec:
    source: str
    start: str
    eps: float
    max_queries: int


# page.png ("menu") → "crossword" (chessboard.png): 9,733 queries, 37 s on 2 cores.
DEMO = DemoSpec(source="page", start="chessboard_RGB", eps=0.05, max_queries=40_000)


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="output directory")] = Path("demo-out"),
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    backend: Annotated[BackendOpt, typer.Option(help="inference backend")] = BackendOpt.auto,
) -> None:
    """PI attack (top-1 label and score only) on bundled photos: make one photo carry another's
    label."""
    photos = bundled_photos()
    if DEMO.source not in photos or DEMO.start not in photos:
        raise fail("the demo photos ship with scikit-image; pip install scikit-image")
    src, start = photos[DEMO.source], photos[DEMO.start]

    def go() -> None:
        model = load_model(backend=backend.value)
        assert model.class_names is not None
        tgt = int(model(load_image(start)[None])[0].argmax())
        out.print(
            f"[bold]bbattack demo[/]: PI attack, top-1 label+score only, ε={DEMO.eps}: "
            f"make {src.name} look like '{model.class_names.name(tgt)}' "
            f"(start image {start.name})"
        )
        job = AttackJob(
            image=src,
            target=str(tgt),
            threat=Threat.pi,
            k=1,
            eps=DEMO.eps,
            max_queries=DEMO.max_queries,
            start_image=start,
            seed=seed,
            out_dir=out_dir,
            backend=backend,
        )
        run_attack(job, model)

    _guard(go)


# The seed's demo over HTTP: page.png (labelled "Food") must come back with the label
# "Crossword", starting from chessboard.png; 13,587 queries, under 4 min on 2 cores.
# (astronaut.png → "Dog" from horse.png, closer to the paper's skiers, took 32k queries.)
DEMO_API = DemoSpec(source="page", start="chessboard_RGB", eps=0.05, max_queries=40_000)
DEMO_API_LABEL = "Crossword"


@app.command("demo-api")
def demo_api(
    out_dir: Annotated[Path, typer.Option("--out", help="output directory")] = Path("demo-api-out"),
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    backend: Annotated[BackendOpt, typer.Option(help="inference backend")] = BackendOpt.auto,
) -> None:
    """The paper's Cloud Vision demo, end to end over HTTP: start the label service on a free
    loopback port, run the PI attack against it, print the queries and the cost, stop it."""
    photos = bundled_photos()
    if DEMO_API.source not in photos or DEMO_API.start not in photos:
        raise fail("the demo photos ship with scikit-image; pip install scikit-image")

    def go() -> None:
        import secrets

        from .service import create_app
        from .service.runner import serve_in_thread

        model = load_model(backend=backend.value)
        key = secrets.token_urlsafe(16)
        with serve_in_thread(create_app(model, api_keys=[key])) as url:
            endpoint = f"{url}/v1/images:annotate"
            out.print(
                f"[bold]bbattack demo-api[/]: label service on {endpoint}; PI attack over HTTP, "
                f"ε={DEMO_API.eps}: make {photos[DEMO_API.source].name} carry the label "
                f"'{DEMO_API_LABEL}' (start image {photos[DEMO_API.start].name})"
            )
            out_dir.mkdir(parents=True, exist_ok=True)
            job = AttackJob(
                image=photos[DEMO_API.source],
                target=DEMO_API_LABEL,
                threat=Threat.pi,
                eps=DEMO_API.eps,
                max_queries=DEMO_API.max_queries,
                start_image=photos[DEMO_API.start],
                seed=seed,
                out_dir=out_dir,
                success="topk",
                # A fine label sits below its ancestors ("Game", "Puzzle"): ask for 20 labels.
                remote=RemoteOptions(
                    endpoint=endpoint,
                    api_key=key,
                    journal=out_dir / "journal.sqlite",
                    max_results=20,
                ),
            )
            run_attack(job)
        out.print("label service stopped")

    _guard(go)


_RAY_ADDRESS = re.compile(r"^(auto|local|ray://\S+|[\w.-]+:\d+)$")


def _ray_argv(argv: list[str]) -> list[str]:
    """``--ray`` takes an optional address, which click cannot express: a bare ``--ray`` becomes
    ``--ray=local``; ``--ray ADDRESS`` (host:port, ray://..., auto) becomes ``--ray=ADDRESS``."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--ray":
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is not None and _RAY_ADDRESS.match(nxt):
                out.append(f"--ray={nxt}")
                i += 2
                continue
            out.append("--ray=local")
        else:
            out.append(a)
        i += 1
    return out


@app.command()
def bench(
    config: Annotated[Path, typer.Argument(help="grid config (TOML)")],
    db: Annotated[
        Path, typer.Option("--db", help="SQLite results file; rerun the same command to resume")
    ] = Path("bench.sqlite"),
    workers: Annotated[int, typer.Option("--workers", help="local worker processes")] = 1,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="run cases as Ray tasks: --ray starts a local cluster, --ray ADDRESS joins one",
            show_default=False,
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Run (or resume) a benchmark grid: attacks x threat models x eps x budgets x images."""

    def go() -> None:
        from rich.progress import MofNCompleteColumn, TimeRemainingColumn

        from .bench import run_bench

        progress = Progress(
            TextColumn("[bold]cases"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[ok]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err,
            disable=quiet,
        )
        task = progress.add_task("bench", total=None, rate="", ok="")

        def fields(s: Any) -> dict[str, Any]:
            rate = f"{s.queries / s.wall_s:,.0f} q/s" if s.wall_s > 0 else "- q/s"
            ok = f"success {s.succeeded}/{s.done}" if s.done else "success -"
            return {"completed": s.done, "total": s.total, "rate": rate, "ok": ok}

        def on_start(s: Any) -> None:
            progress.update(task, **fields(s))
            if s.done:
                err.print(f"resuming: {s.done}/{s.total} cases already done", highlight=False)
            progress.start()

        # Without a terminal (CI, nohup) the bar is not drawn: log one line per case instead.
        lines = not quiet and not err.is_terminal

        def on_case(c: Any, o: Any, s: Any) -> None:
            progress.update(task, **fields(s))
            if lines:
                what = c.attack if c.attack == c.threat else f"{c.attack} ({c.threat})"
                what += f" k={c.k}" if c.k else ""
                tgt = c.target_name or f"class {c.target_id}"
                err.print(
                    f"[{s.done}/{s.total}] {what} eps={c.eps:g} {c.image} -> {tgt}: "
                    f"{'success' if o.success else o.stop_reason}, {o.queries:,} queries, "
                    f"{o.wall_time_s:.0f} s; {fields(s)['rate']}, {fields(s)['ok']}",
                    highlight=False,
                    soft_wrap=True,
                )

        try:
            summary = run_bench(
                config,
                db,
                workers=workers,
                use_ray=ray is not None,
                ray_address=ray or "local",
                on_start=on_start,
                on_case=on_case,
            )
        except KeyboardInterrupt:
            progress.stop()
            err.print(
                f"interrupted; finished cases are saved in {db}: "
                "run the same command again to resume",
                highlight=False,
            )
            raise typer.Exit(130) from None
        finally:
            progress.stop()
        out.print(
            f"{summary.done}/{summary.total} cases done ({summary.ran} now, "
            f"{summary.queries:,} queries), {summary.succeeded} succeeded; results in {db}\n"
            f"report: bbattack report {db} -o report.html",
            highlight=False,
        )

    _guard(go)


class ReportFormat(StrEnum):
    html = "html"
    md = "md"


@app.command()
def report(
    db: Annotated[Path, typer.Argument(help="benchmark database from `bbattack bench`")],
    output: Annotated[Path, typer.Option("--output", "-o", help="output file")] = Path(
        "report.html"
    ),
    fmt: Annotated[ReportFormat, typer.Option("--format", help="html or md")] = ReportFormat.html,
    samples: Annotated[int, typer.Option(help="cases shown in the image grid")] = 8,
) -> None:
    """Write a self-contained HTML report (tables, plots, images) or Markdown tables."""

    def go() -> None:
        from .bench.report import write_report

        if samples < 0:
            raise UserInputError(f"--samples must be >= 0, got {samples}")
        write_report(db, output, fmt.value, samples=samples)
        out.print(f"wrote {output}", highlight=False)

    _guard(go)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code. Usage errors print one line and give 2."""
    try:
        args = _ray_argv(list(sys.argv[1:] if argv is None else argv))
        rc = app(args=args, standalone_mode=False)
    except _CLICK_ERROR as e:
        msg = " ".join(e.format_message().split())
        err.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
        return 2
    except typer.Abort:
        err.print("aborted")
        return 130
    return int(rc or 0)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
