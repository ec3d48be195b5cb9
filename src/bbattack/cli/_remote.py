"""``bbattack attack --endpoint``: the label API's client, its free pre-flight check, and the
dry run, which touches nothing (no journal, no output) and says whether the endpoint answers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from ..errors import UserInputError
from ..remote import HttpLabelTarget, RemoteAuthError, RemoteError
from ._common import out, print_error
from ._watch import RetryNotes

__all__ = [
    "EXIT_REMOTE",
    "RemoteOptions",
    "dry_run",
    "open_checked",
    "open_client",
    "remote_block",
]

# The exit code of an attack stopped by its remote target (quota spent, service down, a refused
# call), and of a dry run whose endpoint does not answer. The best result so far is written.
EXIT_REMOTE = 3


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


def open_client(
    r: RemoteOptions, budget: int, retries: RetryNotes | None = None
) -> HttpLabelTarget:
    """The client, with the caps. Its own answer cache stays in memory: ``--journal`` is the
    oracle's query journal (bbattack.oracle.journal), which answers repeats before they reach
    the client."""
    return HttpLabelTarget(
        r.endpoint,
        r.api_key,
        max_results=r.max_results,
        max_queries=budget,
        max_cost=r.max_cost,
        price_per_1000=r.price_per_1000,
        on_retry=retries,
    )


def preflight(client: HttpLabelTarget) -> str:
    """The free check before the first paid query: a refused key is the user's to fix (exit
    2), an endpoint that does not answer is one line and EXIT_REMOTE."""
    try:
        return client.probe()
    except RemoteAuthError as e:
        raise UserInputError(str(e)) from None


def open_checked(
    r: RemoteOptions, budget: int, line: str, retries: RetryNotes | None = None
) -> HttpLabelTarget:
    """:func:`open_client`, then :func:`preflight`: an endpoint that does not answer is one
    line (``line`` with the error for ``{e}``) and EXIT_REMOTE, and the client is closed."""
    client = open_client(r, budget, retries)
    try:
        preflight(client)  # free: a dead endpoint or a refused key costs nothing
    except RemoteError as e:
        client.close()
        print_error(line.format(e=e))
        raise typer.Exit(EXIT_REMOTE) from None
    except BaseException:
        client.close()
        raise
    return client


def dry_run(r: RemoteOptions, budget: int) -> int:
    """Print the plan and whether the endpoint answers; send no image, write nothing."""
    client = open_client(r, budget)
    try:
        out.print(
            f"dry run, no image sent: {client.describe_plan(budget)} "
            f"(the --max-queries budget; a successful attack stops earlier)",
            highlight=False,
        )
        try:
            out.print(preflight(client), markup=False, highlight=False)
        except RemoteError as e:
            out.print(f"the endpoint does not answer: {e}", markup=False, highlight=False)
            return EXIT_REMOTE
        return 0
    finally:
        client.close()


def remote_block(client: HttpLabelTarget, r: RemoteOptions) -> dict[str, Any]:
    """result.json's ``remote`` block: what was paid (as billed), served free, and cost."""
    return {
        "endpoint": r.endpoint,
        "paid_queries": client.paid_queries,
        "cached_queries": client.cached_queries,
        "cost_usd": client.cost,
        "price_per_1000": r.price_per_1000,
        "http_calls": client.http_calls,
        "retries": client.retries,
    }
