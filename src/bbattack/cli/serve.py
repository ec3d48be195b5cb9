"""`bbattack serve`: a model (built-in or any model spec, with the same preprocessing flags as
`bbattack attack`) behind a label API, in the wire format of Google Cloud Vision (default), AWS
Rekognition, Azure AI Vision, Clarifai or Hugging Face, optionally behind defences
(``--defense``) that refuse or ban what they flag, in each API's own error form."""

from __future__ import annotations

import enum
import math
from typing import Annotated

import typer

from ..defenses import parse_specs
from ..errors import UserInputError
from ..targets.spec import parse_spec, with_options
from . import _model_flags
from ._common import BackendOpt, app, guard

__all__ = ["SchemaOpt", "serve"]


class SchemaOpt(enum.StrEnum):
    """The wire schemas of :mod:`bbattack.service.wire`."""

    gcv = "gcv"
    rekognition = "rekognition"
    azure = "azure"
    clarifai = "clarifai"
    hf = "hf"


# The longer options' types, so that the command's signature is one line per option.
_ApiKeys = Annotated[
    list[str] | None,
    typer.Option(
        "--api-key",
        help="accepted API key (repeatable; default: $BBATTACK_API_KEYS); "
        "rekognition: ACCESS_KEY_ID:SECRET",
    ),
]
_ModelName = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="the model served: lite0 (default), lite1, lite2, squeezenet, a model file "
        "(.onnx, TorchScript .pt/.ts), module:function, or a Hugging Face directory",
    ),
]
_Defense = Annotated[
    list[str] | None,
    typer.Option(
        help="a defence in front of the model for every key (repeatable, outermost "
        "first): blacklight, piha, stateful, rnd or aaa, with KEY=VALUE after a colon, "
        "e.g. blacklight:action=reject; a refusal is billed and answered with the "
        "schema's 4xx (never 429)",
    ),
]


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to bind (loopback by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free one)")] = 8080,
    schema: Annotated[
        SchemaOpt, typer.Option(help="the API to imitate (its paths, auth, answers, errors)")
    ] = SchemaOpt.gcv,
    api_key: _ApiKeys = None,
    quota: Annotated[int | None, typer.Option(help="images billable per key")] = None,
    rate: Annotated[float | None, typer.Option(help="calls per second per key")] = None,
    threshold: Annotated[float, typer.Option(help="lowest label score returned")] = 0.2,
    max_body_bytes: Annotated[int, typer.Option(help="request size limit (413 above)")] = (
        10 * 1024 * 1024
    ),
    backend: Annotated[BackendOpt, typer.Option(help="inference backend")] = BackendOpt.auto,
    model_name: _ModelName = None,
    input_size: _model_flags.InputSize = None,
    mean: _model_flags.Mean = None,
    std: _model_flags.Std = None,
    scale: _model_flags.Scale = None,
    channels: _model_flags.Channels = None,
    layout: _model_flags.Layout = None,
    resize: _model_flags.Resize = None,
    labels: _model_flags.Labels = None,
    outputs: _model_flags.Outputs = None,
    defense: _Defense = None,
) -> None:
    """Serve a model behind a label API (Cloud Vision's images:annotate by default)."""

    def go() -> None:
        from ..service import serve as run_service

        spec = with_options(
            model_name,
            input_size=input_size,
            mean=mean,
            std=std,
            scale=scale,
            channels=channels,
            layout=layout,
            resize=resize,
            labels=labels,
            outputs=outputs,
        )
        if spec is not None:
            parse_spec(spec)  # a bad spec or flag is one line, before the port is bound
        parse_specs(defense or [])  # a bad defence too
        _check_limits(quota, rate, threshold, max_body_bytes, port)
        run_service(
            host,
            port,
            backend=backend.value,
            api_keys=api_key or None,
            quota=quota,
            rate=rate,
            max_body_bytes=max_body_bytes,
            threshold=threshold,
            schema=schema.value,
            model_spec=spec,
            defenses=tuple(defense or []),
        )

    guard(go)


def _check_limits(
    quota: int | None, rate: float | None, threshold: float, max_body_bytes: int, port: int
) -> None:
    """The numeric flags in range, or one line."""
    if quota is not None and quota < 1:
        raise UserInputError(f"--quota must be >= 1, got {quota}")
    if rate is not None and not (rate > 0 and math.isfinite(rate)):
        raise UserInputError(f"--rate must be a positive number, got {rate}")
    if not (0.0 <= threshold <= 1.0):
        raise UserInputError(f"--threshold must be in [0, 1], got {threshold}")
    if max_body_bytes < 1:
        raise UserInputError(f"--max-body-bytes must be >= 1, got {max_body_bytes}")
    if not 0 <= port <= 65535:
        raise UserInputError(f"--port must be in [0, 65535], got {port}")
