"""`bbattack batch-size`: measure and cache the fastest model batch size (was `bbattack tune`,
which now searches attack hyperparameters)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ..models import load_model
from ._common import BackendOpt, app, guard, out

__all__ = ["batch_size"]


@app.command("batch-size")
def batch_size(
    backend: Annotated[BackendOpt, typer.Option(help="inference backend")] = BackendOpt.auto,
) -> None:
    """Re-measure the fastest model batch size on this machine and cache it."""

    def go() -> None:
        from ..tuning import tune as measure

        model = load_model(backend=backend.value)
        best, speeds = measure(model)
        table = Table(title=f"{model.name} on {model.backend}", title_justify="left")
        table.add_column("batch size")
        table.add_column("images/s")
        for bs, v in speeds.items():
            table.add_row(f"{bs}{' (chosen)' if bs == best else ''}", f"{v:.0f}")
        out.print(table)

    guard(go)
