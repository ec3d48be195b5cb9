"""`bbattack demo` and `bbattack demo-api`: the paper's attacks on bundled photos."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from ..images import bundled_photos, load_image
from ..models import load_model
from ..surrogates import resolve_surrogates
from ._common import BackendOpt, Threat, app, fail, guard, out
from ._remote import SchemaOpt, price_note
from .attack import AttackJob, RemoteOptions, run_attack

__all__ = ["DEMO", "DEMO_API", "DEMO_API_LABEL", "DemoSpec", "demo", "demo_api"]


@dataclass(frozen=True)
class DemoSpec:
    source: str
    start: str
    eps: float
    max_queries: int


# The two demos' run options (``bbattack attack`` has the same flags).
ForceOpt = Annotated[
    bool,
    typer.Option("--force", help="start over where --out already holds a run (the journal stays)"),
]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="go on with the run in --out")]

# astronaut.png ("bobsleigh") → "missile" (rocket.jpg): PI-Square, 1,342 queries, 27-37 s on 2
# busy cores. The rocket projected into the ε-ball is not yet a missile,
# so the attack has to work; page.png → "crossword" (chessboard) took 10 queries and left a
# checkerboard on the page.
DEMO = DemoSpec(source="astronaut", start="rocket", eps=0.05, max_queries=40_000)


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="output directory")] = Path("demo-out"),
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    backend: Annotated[BackendOpt, typer.Option(help="inference backend")] = BackendOpt.auto,
    force: ForceOpt = False,
    resume: ResumeOpt = False,
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
            overwrite=force,
            resume=resume,
        )
        run_attack(job, model)

    guard(go)


# The seed's demo over HTTP, on make demo's pair: astronaut.png (top label "Bobsleigh") must
# come back with the label "Missile", starting from rocket.jpg; PI-Square: 1,270 paid queries
# ($1.91), 2 min on 2 busy cores (2026-12-07). page.png → "Crossword" from the chessboard took
# 206 and left a checkerboard on the page; the paper's PI took 13,587 queries ($20.37).
DEMO_API = DemoSpec(source="astronaut", start="rocket", eps=0.05, max_queries=40_000)
DEMO_API_LABEL = "Missile"


def _local_api(schema: str, url: str) -> tuple[str, str, tuple[str | None, str | None]]:
    """The schema the local service speaks for ``--schema``, the endpoint the attack calls,
    and the JMESPath expressions of ``json`` (shown against the Hugging Face format)."""
    match schema:
        case "gcv":
            return "gcv", f"{url}/v1/images:annotate", (None, None)
        case "clarifai":
            return "clarifai", f"{url}/v2/users/demo/apps/demo/models/lite0/outputs", (None, None)
        case "hf":
            return "hf", f"{url}/models/efficientnet-lite0", (None, None)
        case "json":
            return "hf", f"{url}/models/efficientnet-lite0", ("[*].label", "[*].score")
    return schema, url, (None, None)  # rekognition, azure: the client completes the URL


def _demo_key(schema: str) -> str:
    """A fresh key for the local service (AWS: an access key id and its secret)."""
    import secrets

    if schema == "rekognition":
        return f"AKIADEMO{secrets.token_hex(6).upper()}:{secrets.token_urlsafe(30)}"
    return secrets.token_urlsafe(16)


@app.command("demo-api")
def demo_api(
    out_dir: Annotated[Path, typer.Option("--out", help="output directory")] = Path("demo-api-out"),
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    backend: Annotated[BackendOpt, typer.Option(help="inference backend")] = BackendOpt.auto,
    force: ForceOpt = False,
    resume: ResumeOpt = False,
    surrogate: Annotated[
        list[str] | None,
        typer.Option(
            help="local surrogate model (repeatable: lite1, lite2, module:function): the "
            "surrogate-guided attack instead of PI-Square"
        ),
    ] = None,
    schema: SchemaOpt = "gcv",
) -> None:
    """The paper's Cloud Vision demo, end to end over HTTP: start the label service on a free
    loopback port (speaking ``--schema``'s format), run the PI attack against it, print the
    queries and the cost at that API's price, stop it. The service runs EfficientNet-Lite0;
    a surrogate must be another model."""
    photos = bundled_photos()
    if DEMO_API.source not in photos or DEMO_API.start not in photos:
        raise fail("the demo photos ship with scikit-image; pip install scikit-image")

    def go() -> None:
        from ..remote.schemas import schema_class
        from ..service import create_app
        from ..service.runner import serve_in_thread

        schema_class(schema)  # an unknown schema: refused before the model loads
        model = load_model(backend=backend.value)
        # The service's own model is known here: refuse it as a surrogate before serving.
        resolve_surrogates(surrogate or [], model)
        key = _demo_key(schema)
        served = _local_api(schema, "")[0]
        with serve_in_thread(create_app(model, api_keys=[key], schema=served)) as url:
            _, endpoint, paths = _local_api(schema, url)
            out.print(
                f"[bold]bbattack demo-api[/]: label service ({served}) on {endpoint}; PI attack "
                f"over HTTP (--schema {schema}), ε={DEMO_API.eps}: make "
                f"{photos[DEMO_API.source].name} carry the label '{DEMO_API_LABEL}' (start "
                f"image {photos[DEMO_API.start].name})"
                + (f"; surrogates: {', '.join(surrogate)}" if surrogate else "")
            )
            out.print(f"price: {price_note(schema)}", markup=False, highlight=False)
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
                # Google and Rekognition list a fine label below its ancestors ("Weapon",
                # "Device"): it must be among the labels. A flat API's top labels are the
                # model's own classes, the target among them from the start: it must lead.
                success="top1" if schema_class(schema).hierarchy == "flat" else "topk",
                # A fine label sits below its ancestors ("Weapon", "Device"): ask for 20.
                remote=RemoteOptions(
                    endpoint=endpoint,
                    api_key=key,
                    journal=out_dir / "journal.sqlite",
                    max_results=20,
                    schema=schema,
                    labels_path=paths[0],
                    scores_path=paths[1],
                    # The Google demo's service shows labels from 0.2: ask Rekognition alike.
                    min_confidence=20.0 if schema == "rekognition" else None,
                ),
                surrogates=tuple(surrogate or []),
                overwrite=force,
                resume=resume,
            )
            run_attack(job)
        out.print("label service stopped")

    guard(go)
