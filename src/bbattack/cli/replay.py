"""``bbattack replay DIR``: re-run a finished attack from its query journal, without touching
its target, and check that it reproduces result.json. A red team proves a result this way
without paying again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..attacks import registry
from ..errors import UserInputError
from ..oracle import Labels, Oracle, TopK, View
from ..oracle.journal import Journal
from ..oracle.replay import ReplayTarget
from ..provenance import ENVIRONMENT_KEYS
from ..surrogates import resolve_surrogates
from ._common import Threat, app, guard, out
from ._rundir import RunRecord, first_difference
from ._session import result_blocks

__all__ = ["comparable", "replay", "replay_run"]

# What a replay cannot reproduce: how long things took, and the HTTP traffic of the session.
_TIMING = ("wall_time_s",)
_TRANSPORT = ("http_calls", "retries")


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """result.json without its timings, the HTTP transport counters and the description of
    the machine and packages it ran on."""
    d = {k: v for k, v in doc.items() if k not in _TIMING}
    if isinstance(d.get("remote"), dict):
        d["remote"] = {k: v for k, v in d["remote"].items() if k not in _TRANSPORT}
    if isinstance(d.get("provenance"), dict):
        d["provenance"] = {k: v for k, v in d["provenance"].items() if k not in ENVIRONMENT_KEYS}
    return d


def replay_run(run_dir: Path, as_json: bool = False) -> None:
    rec, x, start = RunRecord.read(run_dir)
    try:
        original = json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        raise UserInputError(
            f"{run_dir}: no finished result to replay (result.json); resume the run first"
        ) from None
    cfg = rec.config
    attack = registry.build(str(cfg["attack"]), **cfg["attack_config"])
    threat, k = Threat(cfg["threat"]), cfg["k"]
    view: View
    if cfg.get("remote") is not None:
        view = TopK(k) if threat is Threat.pi else Labels(k or 10)
    else:
        from .attack import make_view

        view = make_view(threat, k or 1)
    journal = Journal(rec.journal_path(run_dir), read_only=True)
    try:
        journal.replay_run(rec.journal_run)
        oracle = Oracle(
            ReplayTarget(journal, rec.journal_run),
            view,
            max_queries=int(cfg["max_queries"]),
            journal=journal,
        )
        surrogates = resolve_surrogates(cfg["surrogates"], None, cfg.get("model"))
        result = attack.run(
            oracle,
            x,
            rec.target_class,
            seed=int(cfg["seed"]),
            start=start,
            success=cfg["success"],
            surrogates=surrogates,
        )
        stats, last, chain = journal.stats(), journal.position, journal.chain_head()
    finally:
        journal.close()
    transport = {k: original.get("remote", {}).get(k, 0) for k in _TRANSPORT}
    doc = {**result.image_json(0), **result_blocks(rec, stats, last, chain, surrogates, transport)}
    if last != stats.last_seq:
        raise UserInputError(
            f"replay of {run_dir} asked {last} queries; the journal holds {stats.last_seq}"
        )
    where = first_difference(comparable(original), comparable(doc))
    if where is not None:
        raise UserInputError(f"replay of {run_dir} differs from its result.json at {where}")
    if as_json:
        out.print_json(json.dumps(doc))
        return
    out.print(
        f"replayed {run_dir}: {last:,} queries answered from {rec.journal_path(run_dir)}, "
        "none sent; result.json reproduced (timings aside)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def replay(
    run_dir: Annotated[Path, typer.Argument(help="the --out directory of a finished attack")],
    as_json: Annotated[bool, typer.Option("--json", help="print the replayed result")] = False,
) -> None:
    """Re-run a finished attack from its journal without the target; exit 0 if it reproduces
    result.json (timings aside), 2 (one line) at the first query or field that differs."""
    guard(replay_run, run_dir=run_dir, as_json=as_json)
