"""`bbattack classify`: the model's top-k classes for an image."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from ..errors import UserInputError
from ..images import load_image
from ..models import Classifier, load_model
from ._common import BackendOpt, app, guard, out

__all__ = ["classify"]


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
        # A file name is plain text; a Text title would lose the table's title style.
        table = Table(title=f"{escape(image.name)}: top-{k}", title_justify="left")
        for col in ("rank", "id", "class", "probability"):
            table.add_column(col)
        for i, r in enumerate(rows, 1):
            table.add_row(str(i), str(r["id"]), str(r["name"]), f"{r['score']:.4f}")
        out.print(table)

    guard(go)
