"""The report's pictures as ``data:`` URIs: success-against-queries curves, query
histograms (matplotlib, no pyplot) and the image grid's original, adversarial and
perturbation images."""

from __future__ import annotations

import base64
import io
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import NDArray
from PIL import Image

from ._format import (
    Case,
    _class,
    _eps,
    _final,
    _int,
    _queries,
    _threat_label,
)
from .summary import (
    _attack_key,
    _q_success,
    _threat_key,
)

__all__ = ["PERTURBATION_GAIN"]

# (adv − orig) × 10 + 0.5: signed, so mid-grey is "unchanged" and a pixel change of ±0.05
# reaches black or white.
PERTURBATION_GAIN = 10


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
