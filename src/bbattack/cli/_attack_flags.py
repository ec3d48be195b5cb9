"""The options of ``bbattack attack``, one type each (as :mod:`._model_flags` does for the model
file's), so that the command's signature is one line per option."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import SEED_MAX, BackendOpt, Threat

__all__ = [
    "Adaptive",
    "ApiKey",
    "AsJson",
    "AttackName",
    "Backend",
    "CheckpointEvery",
    "Defense",
    "DryRun",
    "Endpoint",
    "Eps",
    "Force",
    "Image",
    "JournalPath",
    "K",
    "MaxCost",
    "MaxQueries",
    "MaxResults",
    "ModelName",
    "Norm",
    "OutDir",
    "Param",
    "PricePer1000",
    "Resume",
    "Seed",
    "StartImage",
    "Success",
    "Surrogate",
    "Target",
    "ThreatModel",
    "Untargeted",
]

Image = Annotated[Path, typer.Argument(help="image to attack")]
Target = Annotated[str | None, typer.Option(help="target class name or id (or label)")]
ThreatModel = Annotated[Threat, typer.Option(help="ql: scores, pi: top-k scores, lo: labels")]
K = Annotated[
    int | None, typer.Option("--k", help="labels revealed per query (default 1; a label API: all)")
]
AttackName = Annotated[
    str | None,
    typer.Option("--attack", help="attack by name (`bbattack attacks`); default: the threat's own"),
]
Norm = Annotated[str, typer.Option(help="the ball: linf or l2")]
Eps = Annotated[float, typer.Option(help="radius of the ball in [0, 1] pixel units")]
MaxQueries = Annotated[
    int | None, typer.Option(help="hard query budget (default: the attack's own)")
]
StartImage = Annotated[
    Path | None,
    typer.Option(help="PI/LO start image of the target class (default: search the bundled photos)"),
]
Untargeted = Annotated[bool, typer.Option(help="any wrong class will do")]
Seed = Annotated[int, typer.Option(help="random seed", min=0, max=SEED_MAX)]
OutDir = Annotated[
    Path | None, typer.Option("--out", help="output directory (default: bbattack-out/<date-time>)")
]
Force = Annotated[
    bool,
    typer.Option(
        "--force",
        "--overwrite",
        help="start over in a non-empty --out: its result and checkpoints go, its journal "
        "stays (else: refused)",
    ),
]
Resume = Annotated[
    Path | None,
    typer.Option(
        help="go on with the run in DIR (killed, interrupted, or stopped by its target: "
        "exit 3) from its latest checkpoint and journal; give the same command"
    ),
]
CheckpointEvery = Annotated[
    str,
    typer.Option(
        help="checkpoint every N steps (50) or every so long (30s, 5m); off: only on "
        "Ctrl-C (a resume replays the run from its journal)"
    ),
]
Backend = Annotated[BackendOpt, typer.Option(help="inference backend")]
AsJson = Annotated[bool, typer.Option("--json", help="print result.json to stdout")]
Param = Annotated[
    list[str] | None,
    typer.Option(help="attack hyperparameter KEY=VALUE (repeatable), e.g. samples=100"),
]
Success = Annotated[
    str, typer.Option(help="PI/LO success: target is the top label (top1) or in the top-k")
]
Endpoint = Annotated[
    str | None,
    typer.Option(help="attack a label API at this URL (env BBATTACK_ENDPOINT); see --schema"),
]
ApiKey = Annotated[str | None, typer.Option(help="API key (env BBATTACK_API_KEY)")]
MaxCost = Annotated[float | None, typer.Option(help="spend cap in USD for the label API")]
PricePer1000 = Annotated[
    float | None,
    typer.Option(help="USD per 1,000 images (default: the schema's list price; gcv 1.50)"),
]
JournalPath = Annotated[
    Path | None, typer.Option(help="query journal (SQLite): cache and audit log")
]
DryRun = Annotated[bool, typer.Option(help="print the expected queries and cost, send nothing")]
MaxResults = Annotated[
    int | None,
    typer.Option(
        help="labels asked of the label API per image (maxResults; default 10); --threat ql: "
        "its number of classes, required (--schema hf's top_k)"
    ),
]
ModelName = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="target model: lite0 (default), lite1, lite2, squeezenet, a model file (.onnx, "
        "TorchScript .pt/.ts), module:function, or a Hugging Face directory",
    ),
]
Surrogate = Annotated[
    list[str] | None,
    typer.Option(
        help="local surrogate model (repeatable): a built-in name, a TorchScript file or "
        "Hugging Face directory ('net.pt?input_size=32&mean=0.5'), module:function, or "
        "all (every built-in model but the target); free, never the target"
    ),
]
Adaptive = Annotated[
    bool,
    typer.Option(
        help="run the attack's adaptive version, built to get past query detectors (square: "
        "adaptive-square, ql: adaptive-ql; `bbattack attacks --json`: adapts)"
    ),
]
Defense = Annotated[
    list[str] | None,
    typer.Option(
        help="a defence in front of the local model (repeatable, outermost first): "
        "blacklight, piha, stateful, rnd or aaa, with KEY=VALUE after a colon, e.g. "
        "blacklight:action=reject,T=25 or rnd:nu=0.02"
    ),
]
