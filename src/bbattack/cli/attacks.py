"""``bbattack attacks``: the registry as a table, or as JSON for scripts."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from ..attacks import registry
from ._common import app, guard, out

__all__ = ["attacks"]


@app.command("attacks")
def attacks(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List every attack: paper, views, norms, targeted/untargeted, default budget."""

    def go() -> None:
        table = registry.all_attacks()
        if as_json:
            rows = [info.to_json() for info in table.values()]
            sys.stdout.write(json.dumps(rows, indent=2) + "\n")
            return
        t = Table(title="attacks (--attack NAME)", title_justify="left")
        t.add_column("name", no_wrap=True)
        for col in ("paper", "views", "norms", "goal", "start", "budget", "default for"):
            t.add_column(col)
        for info in table.values():
            goal = "/".join(
                g for g, ok in (("targeted", info.targeted), ("untargeted", info.untargeted)) if ok
            )
            name = f"{info.name} (baseline)" if info.baseline else info.name
            t.add_row(
                name,
                info.paper.cite(),
                ", ".join(info.views),
                ", ".join(info.norms),
                goal,
                "yes" if info.needs_start else "no",
                f"{info.budget:,}",
                ", ".join(f"--threat {x}" for x in info.default_for) or "-",
            )
        out.print(t)

    guard(go)
