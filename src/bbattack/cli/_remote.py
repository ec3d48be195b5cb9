"""``bbattack attack --endpoint``: the label API's client (``--schema`` names its wire format),
its free pre-flight check, and the dry run, which touches nothing (no journal, no output) and
says whether the endpoint answers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import UserInputError
from ..remote import PRICES, PRICES_READ, HttpLabelTarget, RemoteAuthError, RemoteError
from ..remote.schemas import schema_class
from ._common import fail, out, print_error
from ._watch import RetryNotes

__all__ = [
    "EXIT_REMOTE",
    "SCHEMA_HELP",
    "AncestorsOpt",
    "LabelsPathOpt",
    "RemoteOptions",
    "SchemaOpt",
    "ScoresPathOpt",
    "dry_run",
    "open_checked",
    "open_client",
    "price_note",
    "remote_block",
    "remote_options",
]

# The exit code of an attack stopped by its remote target (quota spent, service down, a refused
# call), and of a dry run whose endpoint does not answer. The best result so far is written.
EXIT_REMOTE = 3
SCHEMA_HELP = (
    "the label API's wire format: gcv (Google Cloud Vision, the default), rekognition (AWS; "
    "--api-key AKID:SECRET), azure, clarifai, hf (Hugging Face) or json (--labels-path, "
    "--scores-path)"
)


# `bbattack attack`'s options for the wire schema (the command passes them to RemoteOptions).
SchemaOpt = Annotated[str, typer.Option(help=SCHEMA_HELP)]
LabelsPathOpt = Annotated[
    str | None,
    typer.Option(help="--schema json: JMESPath of the labels in the answer, e.g. 'data[*].label'"),
]
ScoresPathOpt = Annotated[
    str | None,
    typer.Option(help="--schema json: JMESPath of the scores (0-1), e.g. 'data[*].score'"),
]
AncestorsOpt = Annotated[
    bool,
    typer.Option(
        "--ancestors/--no-ancestors",
        help="a label API: a label meets a --target that is one of its ancestors (as the API "
        "names them: Rekognition's Parents), e.g. 'Dog' meets --target Animal",
    ),
]


@dataclass(frozen=True)
class RemoteOptions:
    """Where and how to reach a label API. ``schema``: its wire format
    (:mod:`bbattack.remote.schemas`); ``price_per_1000`` None: the schema's list price;
    ``labels_path``/``scores_path``: the JMESPath expressions of ``--schema json``;
    ``ancestors``: a label meets a target that is one of its ancestors (as the API names them)."""

    endpoint: str
    api_key: str | None = None
    max_cost: float | None = None
    price_per_1000: float | None = None
    journal: Path | None = None
    dry_run: bool = False
    max_results: int = 10
    schema: str = "gcv"
    labels_path: str | None = None
    scores_path: str | None = None
    ancestors: bool = False
    min_confidence: float | None = None  # Rekognition's MinConfidence (None: its default, 55)
    every_class: bool = False  # --threat ql: ask for every class's score (top_k = max_results)

    def __post_init__(self) -> None:
        api = schema_class(self.schema)  # an unknown schema: refused before anything is opened
        if self.every_class and not api.lists_every_class:
            raise UserInputError(
                f"--threat ql needs a score for every class, and {api.title} cannot list every "
                "class (a score threshold or a hierarchy cuts its answers): use --schema hf "
                "(top_k) with --max-results at least its number of classes, or --threat pi or lo"
            )
        if self.schema != "json" and (self.labels_path or self.scores_path):
            raise UserInputError("--labels-path and --scores-path apply to --schema json")
        if self.schema != "rekognition" and self.min_confidence is not None:
            raise UserInputError("min_confidence applies to --schema rekognition")
        if self.max_cost is not None and self.price is None:
            raise UserInputError(
                f"--max-cost needs a price: --schema {self.schema} is not priced per image "
                f"({PRICES[self.schema].billing}); give --price-per-1000"
            )

    @property
    def schema_options(self) -> dict[str, Any]:
        """What the schema's constructor takes besides the endpoint and key."""
        if self.schema == "rekognition" and self.min_confidence is not None:
            return {"min_confidence": self.min_confidence}
        if self.every_class:  # a schema that lists every class (checked above)
            return {"every_class": True}
        if self.schema != "json":
            return {}
        return {"labels_path": self.labels_path, "scores_path": self.scores_path}

    @property
    def config_extra(self) -> dict[str, Any]:
        """The run config's record of the schema and its options, only where they are not
        Google's defaults (so the config hash of a Cloud Vision run stays what it was)."""
        if self.schema == "gcv" and not self.ancestors:
            return {}
        return {"schema": self.schema, **self.schema_options, "ancestors": self.ancestors}

    @classmethod
    def from_config(cls, block: dict[str, Any], api_key: str | None) -> RemoteOptions:
        """The options a run's config recorded (run.json's ``remote``), for a replay."""
        return cls(
            endpoint=str(block["endpoint"]),
            api_key=api_key,
            price_per_1000=block.get("price_per_1000"),
            max_results=int(block["max_results"]),
            schema=str(block.get("schema", "gcv")),
            labels_path=block.get("labels_path"),
            scores_path=block.get("scores_path"),
            ancestors=bool(block.get("ancestors", False)),
            min_confidence=block.get("min_confidence"),
            every_class=bool(block.get("every_class", False)),
        )

    @property
    def price(self) -> float | None:
        """USD per 1,000 images: the one given, or the schema's list price (None: unpriced)."""
        return (
            self.price_per_1000 if self.price_per_1000 is not None else PRICES[self.schema].per_1000
        )


def remote_options(**options: Any) -> RemoteOptions:
    """RemoteOptions from the command's flags; a bad one is one line and exit code 2."""
    try:
        return RemoteOptions(**options)
    except UserInputError as e:
        raise fail(str(e)) from None


def price_note(schema: str) -> str:
    """How ``schema``'s API is priced, and when that was read."""
    return f"{PRICES[schema].billing} (read {PRICES_READ})"


def open_client(
    r: RemoteOptions, budget: int, retries: RetryNotes | None = None
) -> HttpLabelTarget:
    """The client, with the caps. Its own answer cache stays in memory: ``--journal`` is the
    oracle's query journal (bbattack.oracle.journal), which answers repeats before they reach
    the client."""
    return HttpLabelTarget(
        r.endpoint,
        r.api_key,
        r.schema,
        schema_options=r.schema_options,
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
            f"(the --max-queries budget; a successful attack stops earlier); "
            f"{client.schema.title}: {price_note(r.schema)}",
            markup=False,
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
        "schema": r.schema,
        "paid_queries": client.paid_queries,
        "cached_queries": client.cached_queries,
        "cost_usd": client.cost,
        "price_per_1000": client.price_per_1000,
        "prices_read": PRICES_READ,
        "http_calls": client.http_calls,
        "retries": client.retries,
    }
