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

import base64
import io
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from jinja2 import Environment, StrictUndefined, Template
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import NDArray
from PIL import Image

from ..errors import UserInputError
from ..results import write_atomic
from .db import BenchDB

__all__ = [
    "PAPER_TABLE1",
    "PaperRow",
    "SummaryRow",
    "pick_samples",
    "render_html",
    "render_markdown",
    "summarise",
    "write_report",
]

Case = Mapping[str, Any]

_THREAT_ORDER = {"ql": 0, "pi": 1, "lo": 2}
_DASH = "—"
# (adv − orig) × 10 + 0.5: signed, so mid-grey is "unchanged" and ε = 0.05 fills the range.
PERTURBATION_GAIN = 10


@dataclass(frozen=True)
class SummaryRow:
    """One grid point (threat, k, attack, ε, budget) over its finished cases. Queries are
    ``queries_at_success`` over successful cases; distortions are over successful cases too
    (a failed PI/LO run may end outside ε, which would say nothing about the attack)."""

    threat: str
    k: int
    attack: str
    eps: float
    budget: int
    n: int
    successes: int
    mean_queries: float | None
    median_queries: float | None
    mean_linf: float | None
    mean_l2: float | None

    @property
    def success_rate(self) -> float:
        return self.successes / self.n if self.n else 0.0


@dataclass(frozen=True)
class PaperRow:
    """A row of Table 1 of Ilyas et al. (ICML 2018): targeted, ε = 0.05, InceptionV3, 1,000
    ImageNet validation images, k = 1 for PI and LO, queries over successful attacks."""

    threat: str
    success: str
    median: str


# The paper prints success rate and median queries only (no mean). Figures as recalled in the
# project's research notes (paper.md §2); check them against the PDF before citing elsewhere.
PAPER_TABLE1 = (
    PaperRow("ql", "99.2%", "11,550"),
    PaperRow("pi", "93.6%", "49,624"),
    PaperRow("lo", "90%", "2.7 \u00d7 10\u2076"),  # 2.7 x 10^6
)
_PAPER_EPS = 0.05
_PAPER_K = 1
_PAPER_LABEL = "Ilyas et al. 2018 (paper, InceptionV3)"


# -- pure helpers ---------------------------------------------------------------------------


def _attack_key(attack: str) -> tuple[int, int, str]:
    """Ours first in registry order, then the baselines alphabetically (the registry says
    which is which), then names this bbattack does not know (an older database)."""
    from ..attacks import registry

    table = registry.all_attacks()
    info = table.get(attack)
    if info is None:
        return (2, 0, attack)
    if info.baseline:
        return (1, 0, attack)
    return (0, list(table).index(attack), attack)


def _threat_key(threat: str) -> tuple[int, str]:
    return (_THREAT_ORDER.get(threat, len(_THREAT_ORDER)), threat)


def _done(cases: Iterable[Case]) -> list[Case]:
    return [c for c in cases if c.get("success") is not None]


def _q_success(c: Case) -> int:
    q = c.get("queries_at_success")
    return int(q if q is not None else c["queries"])


def summarise(cases: Iterable[Case]) -> list[SummaryRow]:
    """Group finished cases by (threat, k, attack, ε, budget), in report order: threat
    (ql, pi, lo, others), k, attack (ours first), ε, budget. Pending cases are ignored."""
    groups: dict[tuple[str, int, str, float, int], list[Case]] = defaultdict(list)
    for c in _done(cases):
        groups[(c["threat"], c["k"], c["attack"], c["eps"], c["budget"])].append(c)

    def order(key: tuple[str, int, str, float, int]) -> tuple[Any, ...]:
        threat, k, attack, eps, budget = key
        return (_threat_key(threat), k, _attack_key(attack), eps, budget)

    rows = []
    for key in sorted(groups, key=order):
        cs = groups[key]
        won = [c for c in cs if c["success"]]
        qs = [_q_success(c) for c in won]
        linf = [float(c["linf"]) for c in won if c.get("linf") is not None]
        l2 = [float(c["l2"]) for c in won if c.get("l2") is not None]
        rows.append(
            SummaryRow(
                *key,
                n=len(cs),
                successes=len(won),
                mean_queries=statistics.fmean(qs) if qs else None,
                median_queries=float(statistics.median(qs)) if qs else None,
                mean_linf=statistics.fmean(linf) if linf else None,
                mean_l2=statistics.fmean(l2) if l2 else None,
            )
        )
    return rows


def pick_samples(cases: Sequence[Case], n: int) -> list[Case]:
    """Up to ``n`` finished cases for the image grid: successes first, then failures, each
    taken round-robin over attacks (ours first) so that every attack shows up early."""
    picked: list[Case] = []
    for want in (True, False):
        queues: dict[str, list[Case]] = defaultdict(list)
        for c in _done(cases):
            if bool(c["success"]) is want:
                queues[c["attack"]].append(c)
        lanes = [queues[a] for a in sorted(queues, key=_attack_key)]
        depth = max((len(q) for q in lanes), default=0)
        picked += [lane[i] for i in range(depth) for lane in lanes if i < len(lane)]
    return picked[: max(n, 0)]


# -- formatting -----------------------------------------------------------------------------


def _int(v: int | None) -> str:
    return _DASH if v is None else f"{v:,}"


def _queries(v: float | None) -> str:
    if v is None:
        return _DASH
    return f"{v:,.0f}"  # a mean or median of query counts: a fraction of a query says nothing


def _float(v: float | None, digits: int) -> str:
    return _DASH if v is None else f"{v:.{digits}f}"


def _wall(v: float | None) -> str:
    if v is None:
        return _DASH
    return f"{v:.2f} s" if v < 10 else f"{v:,.1f} s"  # small cases run in well under 1 s


def _eps(v: float) -> str:
    return f"{v:g}"


def _success(row: SummaryRow) -> str:
    return f"{row.successes:,}/{row.n:,} ({row.success_rate:.1%})"


def _threat_label(threat: str, k: int) -> str:
    if threat == "ql":
        return "QL: full scores"
    if threat == "pi":
        return f"PI: top-{k} with scores"
    if threat == "lo":
        return f"LO: top-{k} labels"
    return f"{threat}, k = {k}"


def _class(name: str | None, cid: int | None) -> str:
    if cid is None:
        return name or _DASH
    return f"{name} ({cid})" if name else f"class {cid}"


def _final(c: Case) -> str:
    topk = c.get("final_topk") or []
    if not topk:
        return _class(None, c.get("final_top1"))
    top = topk[0]
    label = _class(top.get("name"), top.get("id"))
    score = top.get("score")
    return label if score is None else f"{label}, p = {float(score):.3f}"


@dataclass(frozen=True)
class _Cell:
    success: str
    mean: str
    median: str


_EMPTY = _Cell(_DASH, _DASH, _DASH)


@dataclass(frozen=True)
class _T1Row:
    threat: str
    attack: str
    budget: str
    cells: tuple[_Cell, ...]
    paper: bool = False


def _table1(rows: Sequence[SummaryRow]) -> tuple[list[str], list[_T1Row]]:
    """The paper's Table 1 layout: a line per (threat, k, attack, budget), ε as column
    groups, and the paper's row after each threat model it applies to."""
    eps = sorted({r.eps for r in rows})
    lines: dict[tuple[str, int, str, int], dict[float, SummaryRow]] = defaultdict(dict)
    for r in rows:
        lines[(r.threat, r.k, r.attack, r.budget)][r.eps] = r
    keys = sorted(lines, key=lambda t: (_threat_key(t[0]), t[1], _attack_key(t[2]), t[3]))
    paper = {p.threat: p for p in PAPER_TABLE1}
    has_paper_eps = any(abs(e - _PAPER_EPS) < 1e-9 for e in eps)
    out: list[_T1Row] = []
    for i, (threat, k, attack, budget) in enumerate(keys):
        by_eps = lines[(threat, k, attack, budget)]
        cells = []
        for e in eps:
            s = by_eps.get(e)
            cells.append(
                _EMPTY
                if s is None
                else _Cell(_success(s), _queries(s.mean_queries), _queries(s.median_queries))
            )
        out.append(_T1Row(_threat_label(threat, k), attack, _int(budget), tuple(cells)))
        last_of_group = i + 1 == len(keys) or keys[i + 1][:2] != (threat, k)
        p = paper.get(threat)
        if last_of_group and p and has_paper_eps and (threat == "ql" or k == _PAPER_K):
            pcells = tuple(
                _Cell(p.success, _DASH, p.median) if abs(e - _PAPER_EPS) < 1e-9 else _EMPTY
                for e in eps
            )
            out.append(_T1Row(_threat_label(threat, k), _PAPER_LABEL, _DASH, pcells, True))
    return [_eps(e) for e in eps], out


CASE_COLUMNS = (
    "idx",
    "attack",
    "threat",
    "k",
    "ε",
    "budget",
    "image",
    "target",
    "success",
    "queries",
    "queries at success",
    "L∞",
    "L2",
    "stop reason",
    "wall time",
)
_CASE_NUMERIC = frozenset(
    {"idx", "k", "ε", "budget", "queries", "queries at success", "L∞", "L2", "wall time"}
)


def _case_cells(c: Case) -> list[str]:
    wall = c.get("wall_time_s")
    return [
        str(c["idx"]),
        c["attack"],
        c["threat"],
        _DASH if c["threat"] == "ql" else str(c["k"]),  # QL reveals every score: no k
        _eps(c["eps"]),
        _int(c["budget"]),
        c["image"],
        _class(c.get("target_name"), c.get("target_id")),
        "yes" if c["success"] else "no",
        _int(c.get("queries")),
        _int(c.get("queries_at_success")),
        _float(c.get("linf"), 4),
        _float(c.get("l2"), 3),
        c.get("stop_reason") or _DASH,
        _wall(wall),
    ]


@dataclass(frozen=True)
class _Header:
    name: str
    created: str
    last_finished: str
    model: str
    backend: str
    machine: str
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
        versions=versions or _DASH,
        config_hash=meta.get("config_hash", _DASH),
        config_toml=meta.get("config_toml", ""),
        done=len(cases),
        total=db.counts()[1],
        succeeded=sum(1 for c in cases if c["success"]),
    )


# -- images and plots -----------------------------------------------------------------------


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _rgb(png: bytes) -> NDArray[np.uint8]:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _png(arr: NDArray[np.uint8]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class _Sample:
    idx: int
    attack: str
    threat: str
    eps: str
    success: bool
    queries: str
    original: str
    adversarial: str
    perturbation: str | None
    before: str
    after: str
    target: str


def _sample(c: Case, original_png: bytes, adv_png: bytes | None) -> _Sample | None:
    if not adv_png:
        return None
    try:
        orig, adv = _rgb(original_png), _rgb(adv_png)
    except OSError:  # an unreadable blob: leave the case out of the grid, not the report
        return None
    pert = None
    if orig.shape == adv.shape:
        d = (adv.astype(np.float64) - orig) * PERTURBATION_GAIN + 127.5
        pert = _data_uri(_png(np.clip(np.rint(d), 0, 255).astype(np.uint8)))
    return _Sample(
        idx=int(c["idx"]),
        attack=c["attack"],
        threat=_threat_label(c["threat"], c["k"]),
        eps=_eps(c["eps"]),
        success=bool(c["success"]),
        queries=_int(c.get("queries_at_success") if c["success"] else c.get("queries")),
        original=_data_uri(original_png),
        adversarial=_data_uri(adv_png),
        perturbation=pert,
        before=_class(c.get("original_name"), c.get("original_id")),
        after=_final(c),
        target=_class(c.get("target_name"), c.get("target_id")),
    )


def _figure_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    # Figure.savefig picks the Agg canvas itself: no pyplot, so no global state or GUI backend.
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return _data_uri(buf.getvalue())


def _style(i: int) -> dict[str, Any]:
    colours = [f"C{j}" for j in range(10)]
    return {"color": colours[i % 10], "linestyle": ["-", "--", ":", "-."][(i // 10) % 4]}


def _success_plot(cases: Sequence[Case]) -> str | None:
    """Fraction of a curve's cases that succeeded within q queries, against q (log)."""
    if not any(c["success"] for c in cases):
        return None
    groups: dict[tuple[str, str, int, float], list[Case]] = defaultdict(list)
    for c in cases:
        groups[(c["attack"], c["threat"], c["k"], c["eps"])].append(c)
    order = sorted(groups, key=lambda g: (_attack_key(g[0]), _threat_key(g[1]), g[2], g[3]))
    # Every curve starts at the fewest queries any case needed, so curves without a success
    # (flat at 0) do not stretch the log axis down to 1.
    start = min(max(1, _q_success(c)) for c in cases if c["success"])
    fig = Figure(figsize=(9.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for i, key in enumerate(order):
        cs = groups[key]
        qs = sorted(max(1, _q_success(c)) for c in cs if c["success"])
        end = max([int(c["budget"]) for c in cs] + qs)
        xs = [start, *qs, end]
        ys = [0.0, *((j + 1) / len(cs) for j in range(len(qs))), len(qs) / len(cs)]
        attack, threat, k, eps = key
        label = f"{attack} · {_threat_label(threat, k)} · ε={_eps(eps)} ({len(qs)}/{len(cs)})"
        ax.step(xs, ys, where="post", label=label, linewidth=1.6, **_style(i))
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("queries")
    ax.set_ylabel("fraction of cases succeeded")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _figure_uri(fig)


def _histogram_plot(cases: Sequence[Case]) -> str | None:
    """Queries at success per attack, on shared log-spaced bins."""
    by_attack: dict[str, list[int]] = defaultdict(list)
    for c in cases:
        if c["success"]:
            by_attack[c["attack"]].append(max(1, _q_success(c)))
    if not by_attack:
        return None
    attacks = sorted(by_attack, key=_attack_key)
    every = [q for a in attacks for q in by_attack[a]]
    edges = np.geomspace(min(every) / 1.1, max(every) * 1.1, 31)
    fig = Figure(figsize=(9.5, 1.0 + 1.6 * len(attacks)), layout="constrained")
    axes = fig.subplots(len(attacks), 1, sharex=True, squeeze=False)[:, 0]
    for i, (ax, attack) in enumerate(zip(axes, attacks, strict=True)):
        qs = by_attack[attack]
        ax.hist(qs, bins=edges, color=_style(i)["color"])
        ax.set_xscale("log")
        ax.set_ylabel("cases")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        plural = "success" if len(qs) == 1 else "successes"
        title = f"{attack}: {len(qs):,} {plural}, median {_queries(statistics.median(qs))}"
        ax.set_title(title, fontsize="medium", loc="left")
        ax.grid(True, which="both", alpha=0.3)
    axes[-1].set_xlabel("queries at success")
    return _figure_uri(fig)


# -- rendering ------------------------------------------------------------------------------

_HTML = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bbattack benchmark: {{ h.name }}</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1f2328; max-width: 1320px; margin: 1.5em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin: 0 0 .3em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { border: 1px solid #d0d7de; padding: .2em .55em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.paper td { font-style: italic; background: #fff8e1; }
.yes { color: #1a7f37; font-weight: 600; }
.no { color: #cf222e; font-weight: 600; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .15em 1.2em; }
dl.meta dt { font-weight: 600; }
dl.meta dd { margin: 0; }
pre { background: #f6f8fa; padding: .8em; overflow: auto; }
.note { color: #57606a; max-width: 62em; }
.empty { font-size: 1.1em; padding: .8em; background: #fff8e1; }
figure.sample { display: flex; flex-wrap: wrap; gap: .5em 1.2em; margin: 0 0 1em;
                padding: .6em; border: 1px solid #d0d7de; border-radius: 6px; }
figure.sample .imgs { display: flex; gap: .5em; }
figure.sample .imgs div { text-align: center; font-size: .9em; color: #57606a; }
figure.sample img { display: block; width: 224px; height: 224px; image-rendering: pixelated; }
figure.sample figcaption { flex: 1 1 16em; line-height: 1.7; }
img.plot { max-width: 100%; height: auto; }
</style>
</head>
<body>
<h1>Benchmark: {{ h.name }}</h1>
<dl class="meta">
<dt>run started</dt><dd>{{ h.created }}</dd>
<dt>last case finished</dt><dd>{{ h.last_finished }}</dd>
<dt>model</dt><dd>{{ h.model }}</dd>
<dt>backend</dt><dd>{{ h.backend }}</dd>
<dt>machine</dt><dd>{{ h.machine }}</dd>
<dt>versions</dt><dd>{{ h.versions }}</dd>
<dt>config hash</dt><dd><code>{{ h.config_hash }}</code></dd>
<dt>cases</dt><dd>{{ h.done | num }} of {{ h.total | num }} done,
{{ h.succeeded | num }} succeeded</dd>
</dl>
<details><summary>config (TOML)</summary><pre>{{ h.config_toml }}</pre></details>
{% if not cases %}
<p class="empty">No finished cases yet: {{ h.done | num }} of
{{ h.total | num }} done. Run <code>bbattack bench</code> and report again.</p>
{% else %}

<h2>Success rate and queries (the paper's Table 1 layout)</h2>
<table id="table1">
<thead>
<tr><th rowspan="2">threat model</th><th rowspan="2">attack</th>
<th rowspan="2" class="num">budget</th>
{% for e in t1_eps %}<th colspan="3">ε = {{ e }}</th>{% endfor %}</tr>
<tr>{% for e in t1_eps %}<th class="num">success</th><th class="num">mean queries</th>
<th class="num">median queries</th>{% endfor %}</tr>
</thead>
<tbody>
{% for r in t1 %}
<tr{% if r.paper %} class="paper"{% endif %}><td>{{ r.threat }}</td><td>{{ r.attack }}</td>
<td class="num">{{ r.budget }}</td>
{% for c in r.cells %}<td class="num">{{ c.success }}</td><td class="num">{{ c.mean }}</td>
<td class="num">{{ c.median }}</td>{% endfor %}</tr>
{% endfor %}
</tbody>
</table>
<p class="note">Targeted attacks; queries are counted over successful cases only. Highlighted
rows are the paper's, not ours: {{ paper_note }}</p>

<h2>Summary per grid point</h2>
<table id="summary">
<thead><tr><th>threat model</th><th>attack</th><th class="num">ε</th>
<th class="num">budget</th><th class="num">cases</th><th class="num">success</th>
<th class="num">mean queries</th><th class="num">median queries</th>
<th class="num">mean L∞</th><th class="num">mean L2</th></tr></thead>
<tbody>
{% for r in summary %}
<tr><td>{{ r.threat }}</td><td>{{ r.attack }}</td><td class="num">{{ r.eps }}</td>
<td class="num">{{ r.budget }}</td><td class="num">{{ r.n }}</td>
<td class="num">{{ r.success }}</td><td class="num">{{ r.mean }}</td>
<td class="num">{{ r.median }}</td><td class="num">{{ r.linf }}</td>
<td class="num">{{ r.l2 }}</td></tr>
{% endfor %}
</tbody>
</table>
<p class="note">Queries, L∞ and L2 are over successful cases (pixels in [0, 1]; L2 over the
whole image).</p>

<h2>Success rate against queries</h2>
{% if success_plot %}
<img class="plot" alt="fraction of cases succeeded against queries" src="{{ success_plot }}">
<p class="note">For each attack, threat model, k and ε: the fraction of its cases that
succeeded within q queries (log scale). A curve ends at its budget.</p>
{% else %}<p>No successful cases yet.</p>{% endif %}

<h2>Queries at success</h2>
{% if histogram_plot %}
<img class="plot" alt="histograms of queries at success per attack" src="{{ histogram_plot }}">
<p class="note">Per attack, over all its threat models, k, ε and budgets; log-spaced bins.</p>
{% else %}<p>No successful cases yet.</p>{% endif %}

<h2>Examples</h2>
<p class="note">Original | adversarial | perturbation: (adversarial &minus; original) &times;
{{ gain }} + 0.5 per channel, clipped to [0, 1], so mid-grey means unchanged and ε = 0.05
fills the range. Successes first, taken in turn from each attack.</p>
{% if samples %}
<div class="samples">
{% for s in samples %}
<figure class="sample">
<div class="imgs">
<div><img alt="original, case {{ s.idx }}" src="{{ s.original }}">original</div>
<div><img alt="adversarial, case {{ s.idx }}" src="{{ s.adversarial }}">adversarial</div>
{% if s.perturbation %}
<div><img alt="perturbation, case {{ s.idx }}" src="{{ s.perturbation }}">perturbation
&times; {{ gain }}</div>
{% endif %}
</div>
<figcaption>
<b>case {{ s.idx }}</b>: {{ s.attack }}, {{ s.threat }}, ε = {{ s.eps }} ·
{% if s.success %}<span class="yes">success</span> at {{ s.queries }} queries
{% else %}<span class="no">failed</span> after {{ s.queries }} queries{% endif %}<br>
before: {{ s.before }}<br>
after: {{ s.after }}<br>
target: {{ s.target }}
</figcaption>
</figure>
{% endfor %}
</div>
{% else %}<p>No examples shown.</p>{% endif %}

<h2>All finished cases</h2>
<table id="cases">
<thead><tr>{% for col in case_columns %}<th{% if col in case_numeric %} class="num"{% endif %}>
{{- col }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in case_rows %}
<tr>{% for col, v in row %}<td
{%- if col == "success" %} class="{{ v }}"{% elif col in case_numeric %} class="num"{% endif %}>
{{- v }}</td>{% endfor %}</tr>
{% endfor %}
</tbody>
</table>
{% endif %}
</body>
</html>
"""

_PAPER_NOTE = (
    f"{_PAPER_LABEL}, Table 1: targeted, ε = 0.05, 1,000 ImageNet validation images with "
    "random targets, k = 1 for PI and LO. The paper gives success rate and median queries only."
)


@cache
def _template() -> Template:
    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True)
    env.filters["num"] = _int
    return env.from_string(_HTML)


def render_html(db: BenchDB, samples: int = 8) -> str:
    """The self-contained HTML report of the database's finished cases."""
    cases = db.cases("done")
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
                "threat": _threat_label(r.threat, r.k),
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


def render_markdown(db: BenchDB) -> str:
    """GitHub Markdown for BENCHMARKS.md: a header line, Table 1 layout, per-case table."""
    cases = db.cases("done")
    h = _header(db, cases)
    out = [
        f"**Benchmark {_md(h.name)}**: run {_md(h.created)}, model {_md(h.model)} "
        f"(backend {_md(h.backend)}), machine {_md(h.machine)}; "
        f"{h.done:,} of {h.total:,} cases done, {h.succeeded:,} succeeded.",
        "",
        f"Versions: {_md(h.versions)}. Config hash `{h.config_hash.replace('`', '')}`.",
        "",
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
        "Targeted attacks; queries over successful cases only. Rows in italics are the "
        f"paper's, not ours: {_md(_PAPER_NOTE)}",
        "",
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
    with BenchDB.open(db_p, create=False, read_only=True) as db:
        text = render_html(db, samples) if fmt == "html" else render_markdown(db)
    try:
        write_atomic(out_p, text)
    except OSError as e:
        raise UserInputError(f"{out_p}: cannot write ({e.strerror})") from None
