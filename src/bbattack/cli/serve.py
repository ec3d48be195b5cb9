"""`bbattack serve`: the built-in model behind a label API, in the wire format of Google Cloud
Vision (default), AWS Rekognition, Azure AI Vision, Clarifai or Hugging Face."""

from __future__ import annotations

import enum
import math
from typing import Annotated

import typer

from ..errors import UserInputError
from ._common import BackendOpt, app, guard

__all__ = ["SchemaOpt", "serve"]


class SchemaOpt(enum.StrEnum):
    """The wire schemas of :mod:`bbattack.service.wire`."""

    gcv = "gcv"
    rekognition = "rekognition"
    azure = "azure"
    clarifai = "clarifai"
    hf = "hf"


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to bind (loopback by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free one)")] = 8080,
    schema: Annotated[
        SchemaOpt, typer.Option(help="the API to imitate (its paths, auth, answers, errors)")
    ] = SchemaOpt.gcv,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            help="accepted API key (repeatable; default: $BBATTACK_API_KEYS); "
            "rekognition: ACCESS_KEY_ID:SECRET",
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
    """Serve the built-in model behind a label API (Cloud Vision's images:annotate by default)."""

    def go() -> None:
        from ..service import serve as run_service

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
        )

    guard(go)
