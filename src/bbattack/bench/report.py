"""The benchmark report that ``bbattack report`` writes from a ``bbattack bench`` database.

HTML is one static, self-contained page: inline CSS, plots and images as ``data:`` URIs, no
scripts and no external URLs. It holds the run's header and config, the paper's Table 1
layout (success rate and queries per threat model, attack and ε, with the paper's own row
for reference), a summary per grid point with distortions, success-against-queries curves,
query histograms, an image grid and a per-case table. Markdown holds a header line and the
same Table 1 layout and per-case table, for BENCHMARKS.md.

Only finished cases are reported, so a database that is still being filled can be reported
at any time. Finished rows never change, and the total number of cases is fixed when the
grid is written, so the report is consistent without locking out the writer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from jinja2 import Environment, PackageLoader, StrictUndefined, Template

from ..errors import UserInputError
from ..results import write_atomic
from ._format import (
    _CASE_NUMERIC,
    _DASH,
    CASE_COLUMNS,
    Case,
    _case_cells,
    _eps,
    _float,
    _int,
    _queries,
    _threat_label,
)
from .db import BenchDB
from .defense_table import DEFENSE_HEADER, DEFENSE_NOTE, defense_cells, defense_rows
from .plots import PERTURBATION_GAIN, _histogram_plot, _sample, _success_plot
from .summary import (
    _PAPER_NOTE,
    _success,
    _table1,
    pick_samples,
    summarise,
    versus_peers,
    with_surrogate_labels,
)
from .surrogate_table import SURROGATE_HEADER, SURROGATE_NOTE, surrogate_cells, surrogate_rows

__all__ = ["render_html", "render_markdown", "write_report"]


@dataclass(frozen=True)
class _Header:
    name: str
    created: str
    last_finished: str
    model: str
    backend: str
    machine: str
    images: str  # which package photos qualified: the denominator of every rate
    versions: str
    config_hash: str
    config_toml: str
    done: int
    total: int
    succeeded: int


def _header(db: BenchDB, cases: Sequence[Case]) -> _Header:
    meta = db.meta()
    try:
        v = json.loads(meta.get("versions", "{}"))
        versions = ", ".join(f"{k} {val}" for k, val in v.items()) if isinstance(v, dict) else ""
    except json.JSONDecodeError:
        versions = meta.get("versions", "")
    finished = [str(c["finished_at"]) for c in cases if c.get("finished_at")]
    # The total is fixed at initialise(); done/succeeded come from the rows we report, so the
    # header agrees with the tables even while a writer adds cases.
    return _Header(
        name=meta.get("name", _DASH),
        created=meta.get("created", _DASH),
        last_finished=max(finished) if finished else _DASH,
        model=meta.get("model", _DASH),
        backend=meta.get("backend", _DASH),
        machine=meta.get("machine", _DASH),
        images=_qualified(meta.get("images_qualified", "")),
        versions=versions or _DASH,
        config_hash=meta.get("config_hash", _DASH),
        config_toml=meta.get("config_toml", ""),
        done=len(cases),
        total=db.counts()[1],
        succeeded=sum(1 for c in cases if c["success"]),
    )


def _qualified(raw: str) -> str:
    """ "foolbox: 17 of 20 photos qualify (rule), 16 used" per package photo set."""
    try:
        sets = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return _DASH
    if not isinstance(sets, dict) or not sets:
        return _DASH
    return "; ".join(
        (f"{q['split']} split, " if q.get("split") else "")
        + f"{name}: {q.get('qualified')} of {q.get('offered')} photos qualify "
        f"({q.get('rule')}), {q.get('used')} used"
        for name, q in sets.items()
        if isinstance(q, dict)
    )


@cache
def _template() -> Template:
    # PackageLoader reads bench/templates through the package's loader: an editable checkout
    # and an installed wheel alike (the templates are package data).
    env = Environment(
        loader=PackageLoader("bbattack.bench", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
    )
    env.filters["num"] = _int
    return env.get_template("report.html.j2")


def render_html(db: BenchDB, samples: int = 8, benign: Mapping[str, float] | None = None) -> str:
    """The self-contained HTML report of the database's finished cases."""
    raw = db.cases("done")
    cases = with_surrogate_labels(raw, db.meta().get("model"))
    h = _header(db, cases)
    rows = summarise(cases)
    t1_eps, t1 = _table1(rows)
    picked = pick_samples(cases, samples)
    images = db.images() if picked else {}
    grid = [_sample(c, images[c["image"]]["png"], db.adv_png(c["id"])) for c in picked]
    return _template().render(
        h=h,
        cases=cases,
        t1_eps=t1_eps,
        t1=t1,
        paper_note=_PAPER_NOTE,
        summary=[
            {
                "threat": _threat_label(r.threat, r.k, r.norm, r.goal),
                "attack": r.attack,
                "eps": _eps(r.eps),
                "budget": _int(r.budget),
                "n": _int(r.n),
                "success": _success(r),
                "mean": _queries(r.mean_queries),
                "median": _queries(r.median_queries),
                "linf": _float(r.mean_linf, 4),
                "l2": _float(r.mean_l2, 3),
            }
            for r in rows
        ],
        success_plot=_success_plot(cases) if cases else None,
        histogram_plot=_histogram_plot(cases) if cases else None,
        gain=PERTURBATION_GAIN,
        samples=[s for s in grid if s is not None],
        case_columns=CASE_COLUMNS,
        case_numeric=_CASE_NUMERIC,
        case_rows=[list(zip(CASE_COLUMNS, _case_cells(c), strict=True)) for c in cases],
        defense_header=DEFENSE_HEADER,
        defense_rows=defense_cells(defense_rows(raw, benign, db.meta().get("model"))),
        defense_note=DEFENSE_NOTE,
        surrogate_header=SURROGATE_HEADER,
        surrogate_rows=surrogate_cells(surrogate_rows(raw, db.meta().get("model"))),
        surrogate_note=SURROGATE_NOTE,
    )


def _md(text: str) -> str:
    # CommonMark treats a backslash before any ASCII punctuation as a literal, so names such
    # as "<script>" or "a|b" can neither become HTML nor break a table.
    out = "".join("\\" + ch if ch in "\\`*_[]<>|#" else ch for ch in text)
    return " ".join(out.split())  # a newline would end the table row


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> str:
    align = ["---:" if i in numeric else "---" for i in range(len(header))]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _md_peers(cases: Sequence[Case]) -> list[str]:
    """Our attacks against the best peer at each grid point, on the cases both finished;
    nothing when no grid point has both."""
    body = []
    for p in versus_peers(cases):
        o, b = p.ours, p.peer
        ratio = "—" if p.ratio is None else f"{p.ratio:.2f}"
        body.append(
            [
                _md(_threat_label(o.threat, o.k, o.norm, o.goal)),
                _eps(o.eps),
                f"{o.budget:,}",
                _md(o.attack),
                _success(o),
                _queries(o.mean_queries),
                _queries(o.median_queries),
                _md(b.attack),
                _success(b),
                _queries(b.mean_queries),
                _queries(b.median_queries),
                ratio,
            ]
        )
    if not body:
        return []
    header = ["threat model", "ε", "budget", "ours", "success", "mean", "median"]
    header += ["best peer", "peer success", "peer mean", "peer median", "median ratio"]
    return [
        "#### Ours against the best peer on the same cases",
        "",
        _md_table(header, body, {1, 2, 4, 5, 6, 8, 9, 10, 11}),
        "",
        "Both sides are counted over the cases both have finished (same image, target and "
        "seed). Best peer: the baseline with the highest success rate there, then the lowest "
        "median. Median ratio: our median queries over the peer's (below 1: fewer).",
        "",
    ]


def _md_defenses(
    cases: Sequence[Case], benign: Mapping[str, float] | None, target: str | None
) -> list[str]:
    rows = defense_rows(cases, benign, target)
    if not rows:
        return []
    body = [[_md(v) for v in r] for r in defense_cells(rows)]
    return [
        "#### Defences: detection, cost to the attacker, and success",
        "",
        _md_table(DEFENSE_HEADER, body, set(range(3, len(DEFENSE_HEADER)))),
        "",
        _md(DEFENSE_NOTE),
        "",
    ]


def _md_surrogates(cases: Sequence[Case], target: str | None) -> list[str]:
    rows = surrogate_rows(cases, target)
    if not rows:
        return []
    body = [[_md(v) for v in r] for r in surrogate_cells(rows)]
    return [
        "#### Surrogate work: what a surrogate-guided case costs besides queries",
        "",
        _md_table(SURROGATE_HEADER, body, set(range(2, len(SURROGATE_HEADER)))),
        "",
        _md(SURROGATE_NOTE),
        "",
    ]


def render_markdown(db: BenchDB, benign: Mapping[str, float] | None = None) -> str:
    """GitHub Markdown for BENCHMARKS.md: a header line, Table 1 layout, the defences' table
    (``benign``: see :func:`~.defense_table.defense_rows`), per-case table."""
    raw = db.cases("done")
    cases = with_surrogate_labels(raw, db.meta().get("model"))
    h = _header(db, cases)
    out = [
        f"**Benchmark {_md(h.name)}**: run {_md(h.created)}, model {_md(h.model)} "
        f"(backend {_md(h.backend)}), machine {_md(h.machine)}; "
        f"{h.done:,} of {h.total:,} cases done, {h.succeeded:,} succeeded.",
        "",
        f"Versions: {_md(h.versions)}. Config hash `{h.config_hash.replace('`', '')}`.",
        "",
        *([f"Photo sets: {_md(h.images)}.", ""] if h.images != _DASH else []),
    ]
    if not cases:
        out += [f"_No finished cases yet: 0 of {h.total:,} done._", ""]
        return "\n".join(out)
    t1_eps, t1 = _table1(summarise(cases))
    header = ["threat model", "attack", "budget"]
    for e in t1_eps:
        header += [f"ε = {e}: success", f"ε = {e}: mean queries", f"ε = {e}: median queries"]
    body = []
    for r in t1:
        attack = f"*{_md(r.attack)}*" if r.paper else _md(r.attack)
        cells = [_md(r.threat), attack, r.budget]
        for c in r.cells:
            cells += [c.success, c.mean, c.median]
        body.append(cells)
    out += [
        "#### Success rate and queries (the paper's Table 1 layout)",
        "",
        _md_table(header, body, set(range(2, len(header)))),
        "",
        "Targeted L∞ unless the threat model says otherwise; queries over successful cases "
        f"only. Rows in italics are the paper's, not ours: {_md(_PAPER_NOTE)}",
        "",
        *_md_peers(cases),
        *_md_defenses(raw, benign, db.meta().get("model")),
        *_md_surrogates(raw, db.meta().get("model")),
        "#### All finished cases",
        "",
        _md_table(
            CASE_COLUMNS,
            [[_md(v) for v in _case_cells(c)] for c in cases],
            {i for i, col in enumerate(CASE_COLUMNS) if col in _CASE_NUMERIC},
        ),
        "",
    ]
    return "\n".join(out)


def write_report(
    db_path: str | Path,
    out: str | Path,
    fmt: Literal["html", "md"] = "html",
    *,
    samples: int = 8,
    benign: str | Path | None = None,
) -> None:
    """Render the report of ``db_path`` and write it to ``out`` atomically: on any error
    nothing is written and an existing ``out`` is left as it was."""
    if fmt not in ("html", "md"):
        raise UserInputError(f"report format must be 'html' or 'md', got {fmt!r}")
    if samples < 0:
        raise UserInputError(f"samples must be >= 0, got {samples}")
    db_p, out_p = Path(db_path), Path(out)
    if not out_p.parent.is_dir():
        raise UserInputError(f"{out_p.parent}: no such directory for the report")
    if out_p.is_dir():
        raise UserInputError(f"{out_p}: is a directory")
    if out_p.exists() and db_p.exists() and out_p.samefile(db_p):
        raise UserInputError(f"{out_p}: is the benchmark database itself")
    rates = _benign(Path(benign)) if benign is not None else None
    with BenchDB.open(db_p, create=False, read_only=True) as db:
        text = render_html(db, samples, rates) if fmt == "html" else render_markdown(db, rates)
    try:
        write_atomic(out_p, text)
    except OSError as e:
        raise UserInputError(f"{out_p}: cannot write ({e.strerror})") from None


def _benign(path: Path) -> dict[str, float]:
    """``benchmarks/defense_fpr.py --json``'s file as {defence stack: benign FPR}."""
    from .defense_table import benign_rates

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserInputError(f"{path}: cannot read ({e.strerror})") from None
    except ValueError as e:
        raise UserInputError(f"{path}: not JSON ({e})") from None
    if not isinstance(raw, dict):
        raise UserInputError(f"{path}: not the JSON of benchmarks/defense_fpr.py")
    return benign_rates(raw, str(path))
