"""The benchmark report: summary numbers, Markdown tables, a self-contained and escaped HTML
page that a real browser renders with every image, empty databases and atomic output."""

from __future__ import annotations

import html
import io
import json
import os
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bbattack.bench.db import BenchDB, CaseOutcome, CaseRow
from bbattack.bench.report import render_html, render_markdown, write_report
from bbattack.bench.summary import pick_samples, summarise
from bbattack.errors import UserInputError

SIDE = 96
EVIL = "<script>alert(1)</script>"

META = {
    "name": "synthetic",
    "config_toml": 'name = "synthetic"\nseed = 0\n',
    "config_json": "{}",
    "config_hash": "abc123",
    "versions": json.dumps({"bbattack": "0.1.0", "numpy": "1.26.4"}),
    "model": "toy",
    "backend": "torch",
    "machine": "test box, 2 cores",
    "created": "2025-01-02T03:04:05+00:00",
}

# (attack, threat, k, eps, budget, image, success, queries, queries_at_success, linf, l2)
# None for success: left pending.
GRID: list[tuple[str, str, int, float, int, str, bool | None, int, int | None, float, float]] = [
    ("ql", "ql", 0, 0.05, 1000, "cat", True, 100, 100, 0.05, 3.0),
    ("ql", "ql", 0, 0.05, 1000, "dog", True, 300, 300, 0.03, 1.0),
    ("ql", "ql", 0, 0.05, 1000, "cat", False, 1000, None, 0.05, 4.0),
    ("pi", "pi", 1, 0.05, 5000, "dog", True, 400, 400, 0.05, 2.0),
    ("pi", "pi", 1, 0.05, 5000, "cat", True, 1000, 1000, 0.05, 2.0),
    ("pi", "pi", 1, 0.05, 5000, "dog", True, 200, 200, 0.05, 2.0),
    ("pi", "pi", 1, 0.05, 5000, "cat", True, 4000, 4000, 0.05, 2.0),
    ("ta-square", "ql", 0, 0.1, 1000, "cat", False, 1000, None, 0.1, 5.0),
    ("ta-square", "ql", 0, 0.1, 1000, "dog", False, 1000, None, 0.1, 5.0),
    ("lo", "lo", 1, 0.05, 5000, "dog", True, 2500, 2500, 0.05, 2.5),
    ("lo", "lo", 1, 0.05, 5000, "cat", None, 0, None, 0.0, 0.0),
]
N_DONE = sum(g[6] is not None for g in GRID)
CLASSES = {"cat": (1, "tabby cat"), "dog": (2, EVIL)}


def png(arr: np.ndarray[Any, Any]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def source(seed: int) -> np.ndarray[Any, Any]:
    """A colour gradient with noise: never one colour, like a photo."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(30, 220, SIDE)
    base = np.stack([ramp[None, :].repeat(SIDE, 0), ramp[:, None].repeat(SIDE, 1)], -1)
    base = np.concatenate([base, np.full((SIDE, SIDE, 1), 128.0)], -1)
    return base + rng.normal(0, 8, base.shape)


def make_db(path: Path, grid: list[Any] = GRID) -> Path:
    srcs = {"cat": source(0), "dog": source(1)}
    images = [
        (name, f"/photos/{name}.png", f"digest-{name}", cid, cname, png(srcs[name]))
        for name, (cid, cname) in CLASSES.items()
    ]
    rows = []
    for i, (attack, threat, k, eps, budget, image, *_rest) in enumerate(grid):
        other = "dog" if image == "cat" else "cat"
        tid, tname = CLASSES[other]
        rows.append(
            CaseRow(
                id=f"case{i}",
                idx=i,
                attack=attack,
                threat=threat,
                k=k,
                eps=eps,
                norm="linf",
                budget=budget,
                image=image,
                target_id=tid,
                target_name=tname,
                start_image=other if threat != "ql" else None,
                seed=0,
                params="{}",
            )
        )
    rng = np.random.default_rng(2)
    with BenchDB.open(path, create=True) as db:
        db.initialise(META, images, rows)
        for i, (*_head, image, success, q, qs, linf, l2) in enumerate(grid):
            if success is None:
                continue
            other = "dog" if image == "cat" else "cat"
            final = CLASSES[other] if success else CLASSES[image]
            adv = srcs[image] + rng.choice([-12.0, 12.0], srcs[image].shape)
            db.record(
                CaseOutcome(
                    case_id=f"case{i}",
                    success=success,
                    queries=q,
                    queries_at_success=qs,
                    queries_by_kind={"loss": q},
                    linf=linf,
                    l2=l2,
                    final_top1=final[0],
                    final_topk=[{"id": final[0], "name": final[1], "score": 0.875}],
                    stop_reason="success" if success else "budget",
                    steps=3,
                    wall_time_s=1.5 + i,
                    worker="w0",
                    adv_png=png(adv),
                    trace=[{"step": s, "queries": 10 * s} for s in range(3)],
                )
            )
    return path


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_db(tmp_path_factory.mktemp("report") / "bench.sqlite")


@pytest.fixture(scope="module")
def page(db_path: Path) -> str:
    with BenchDB.open(db_path, create=False) as db:
        return render_html(db, samples=4)


@pytest.fixture(scope="module")
def markdown(db_path: Path) -> str:
    with BenchDB.open(db_path, create=False) as db:
        return render_markdown(db)


def test_summary_numbers(db_path: Path) -> None:
    with BenchDB.open(db_path, create=False) as db:
        rows = summarise(db.cases("done"))
    by = {(r.threat, r.attack, r.eps): r for r in rows}
    # Report order: threat (ql, pi, lo), k, ours before baselines, ε.
    assert list(by) == [
        ("ql", "ql", 0.05),
        ("ql", "ta-square", 0.1),
        ("pi", "pi", 0.05),
        ("lo", "lo", 0.05),
    ]
    ql = by[("ql", "ql", 0.05)]
    assert (ql.n, ql.successes, ql.success_rate) == (3, 2, 2 / 3)
    assert (ql.mean_queries, ql.median_queries) == (200.0, 200.0)
    assert ql.mean_linf == pytest.approx(0.04)  # over successes only
    assert ql.mean_l2 == pytest.approx(2.0)
    pi = by[("pi", "pi", 0.05)]
    assert (pi.n, pi.successes, pi.success_rate) == (4, 4, 1.0)
    assert (pi.mean_queries, pi.median_queries) == (1400.0, 700.0)
    sq = by[("ql", "ta-square", 0.1)]
    assert (sq.n, sq.successes, sq.success_rate) == (2, 0, 0.0)
    assert (sq.mean_queries, sq.median_queries, sq.mean_linf) == (None, None, None)
    lo = by[("lo", "lo", 0.05)]
    assert (lo.n, lo.successes, lo.median_queries) == (1, 1, 2500.0)  # the pending case is out


def test_summary_ignores_pending_rows() -> None:
    case = {"threat": "ql", "k": 0, "attack": "ql", "eps": 0.05, "budget": 10}
    rows = summarise([{**case, "success": None}, {**case, "success": False, "queries": 10}])
    assert [(r.n, r.successes) for r in rows] == [(1, 0)]


def test_samples_mix_attacks_successes_first(db_path: Path) -> None:
    with BenchDB.open(db_path, create=False) as db:
        cases = db.cases("done")
    picked = [(c["attack"], c["idx"]) for c in pick_samples(cases, 6)]
    assert picked == [("ql", 0), ("pi", 3), ("lo", 9), ("ql", 1), ("pi", 4), ("pi", 5)]
    assert pick_samples(cases, 0) == []
    assert len(pick_samples(cases, 100)) == N_DONE  # then the failures


def test_markdown_tables(markdown: str) -> None:
    lines = markdown.splitlines()
    assert lines[0].startswith("**Benchmark synthetic**: run 2025-01-02T03:04:05+00:00")
    assert "model toy (backend torch), machine test box, 2 cores" in lines[0]
    assert f"{N_DONE} of {len(GRID)} cases done, 7 succeeded" in lines[0]
    # ε = 0.05 then ε = 0.1, three columns each.
    assert "| QL: full scores | ql | 1,000 | 2/3 (66.7%) | 200 | 200 | — | — | — |" in lines
    assert "| QL: full scores | ta-square | 1,000 | — | — | — | 0/2 (0.0%) | — | — |" in lines
    paper = "| QL: full scores | *Ilyas et al. 2018 (paper, InceptionV3)* | — | 99.2% | — | 11,550"
    assert any(line.startswith(paper) for line in lines)
    pi = "| PI: top-1 with scores | pi | 5,000 | 4/4 (100.0%) | 1,400 | 700 | — | — | — |"
    assert pi in lines
    assert any(line.startswith("| LO: top-1 labels | *Ilyas et al. 2018") for line in lines)
    cases = lines[lines.index("#### All finished cases") + 2 :]
    table = [line for line in cases if line.startswith("| ")]
    assert len(table) == 2 + N_DONE  # header, alignment, one row per finished case
    assert table[2].startswith("| 0 | ql | ql | — | L∞ | 0.05 | 1,000 | cat | ")
    assert "| yes | 100 | 100 | 0.0500 | 3.000 | success | 1.50 s |" in table[2]


def test_markdown_escapes_names(markdown: str) -> None:
    assert "<script>" not in markdown
    assert r"\<script\>alert(1)\</script\>" in markdown


def test_html_is_self_contained(page: str) -> None:
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page)
    assert links, "expected the images as data: URIs"
    assert all(u.startswith("data:image/png;base64,") for u in links)
    assert "http://" not in page
    assert "https://" not in page
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()


def test_html_escapes_names(page: str) -> None:
    assert EVIL not in page
    assert html.escape(EVIL, quote=False) in page


def test_html_sections(page: str) -> None:
    for text in (
        "Benchmark: synthetic",
        "abc123",
        "bbattack 0.1.0, numpy 1.26.4",
        "<details><summary>config (TOML)",
        "Ilyas et al. 2018 (paper, InceptionV3)",
        "11,550",
        "49,624",
        "2/3 (66.7%)",
        "(adversarial &minus; original) &times;\n10 + 0.5",
    ):
        assert text in page
    assert page.count('class="sample"') == 4


def test_zero_done_cases(tmp_path: Path) -> None:
    pending = [(*g[:6], None, 0, None, 0.0, 0.0) for g in GRID]
    db = make_db(tmp_path / "empty.sqlite", pending)
    for fmt in ("html", "md"):
        out = tmp_path / f"report.{fmt}"
        write_report(db, out, fmt, samples=8)
        text = out.read_text(encoding="utf-8")
        assert "No finished cases yet" in text
        assert f"of {len(GRID)}" in text


def test_write_report_formats(db_path: Path, tmp_path: Path) -> None:
    write_report(db_path, tmp_path / "r.html", samples=2)
    write_report(db_path, tmp_path / "r.md", "md")
    assert (tmp_path / "r.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert (tmp_path / "r.md").read_text(encoding="utf-8").startswith("**Benchmark synthetic**")


def test_report_while_a_writer_holds_the_database(tmp_path: Path) -> None:
    path = make_db(tmp_path / "bench.sqlite")
    writer = BenchDB.open(path, create=False)
    try:
        # A bench run in the middle of recording the pending case: not committed yet.
        writer.conn.execute("BEGIN IMMEDIATE")
        writer.conn.execute(
            "UPDATE cases SET status = 'done', success = 1, queries = 5 WHERE idx = ?",
            (len(GRID) - 1,),
        )
        start = time.monotonic()
        write_report(path, tmp_path / "r.md", "md")
        assert time.monotonic() - start < 3  # no waiting on the writer's lock
    finally:
        writer.conn.execute("ROLLBACK")
        writer.close()
    text = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert f"{N_DONE} of {len(GRID)} cases done" in text


@pytest.mark.parametrize("kind", ["missing", "garbage", "empty", "directory"])
def test_bad_database_writes_nothing(tmp_path: Path, kind: str) -> None:
    bad = tmp_path / "bench.sqlite"
    if kind == "garbage":
        bad.write_bytes(b"this is not sqlite" * 100)
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "directory":
        bad.mkdir()
    out = tmp_path / "out" / "report.html"
    out.parent.mkdir()
    with pytest.raises(UserInputError):
        write_report(bad, out)
    assert list(out.parent.iterdir()) == []


def test_bad_arguments(db_path: Path, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="no such directory"):
        write_report(db_path, tmp_path / "nope" / "r.html")
    with pytest.raises(UserInputError, match="format"):
        write_report(db_path, tmp_path / "r.pdf", "pdf")  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="samples"):
        write_report(db_path, tmp_path / "r.html", samples=-1)
    with pytest.raises(UserInputError, match="database itself"):
        write_report(db_path, db_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_failed_render_keeps_the_old_report(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "report.html"
    out.write_text("old report", encoding="utf-8")

    def broken(db: BenchDB, samples: int = 8, benign: object = None) -> str:
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr("bbattack.bench.report.render_html", broken)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_report(db_path, out)
    assert out.read_text(encoding="utf-8") == "old report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


# -- a real browser -------------------------------------------------------------------------

# After load: each image decoded, non-empty and not one flat colour (drawn into a canvas;
# data: URIs are same-origin, so getImageData is allowed). The result goes into the DOM,
# which --dump-dom prints.
PROBE = """
<script>
window.addEventListener("load", () => {
  // Synchronous on purpose: the load event fires after every image has loaded, and
  // --dump-dom may not wait for promises on a busy machine.
  const imgs = Array.from(document.images);
  const out = imgs.map((img) => {
    const c = document.createElement("canvas");
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    let varied = false;
    if (c.width > 0 && c.height > 0) {
      const ctx = c.getContext("2d");
      ctx.drawImage(img, 0, 0);
      const d = ctx.getImageData(0, 0, c.width, c.height).data;
      for (let i = 4; i < d.length && !varied; i += 4) {
        varied = d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2];
      }
    }
    return {alt: img.alt, width: img.naturalWidth, height: img.naturalHeight, varied};
  });
  const pre = document.createElement("pre");
  pre.id = "result";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("BBATTACK_REQUIRE_CHROMIUM") == "1":
        pytest.fail("BBATTACK_REQUIRE_CHROMIUM=1 but no chromium on PATH")
    pytest.skip("chromium not installed")


class _Rows(HTMLParser):
    """Counts the body rows of each table with an id."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, int] = {}
        self._table: str | None = None
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs).get("id")
            if self._table:
                self.rows[self._table] = 0
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body and self._table:
            self.rows[self._table] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = None


def test_html_renders_in_chromium(page: str, tmp_path: Path) -> None:
    browser = _chromium()
    probe = tmp_path / "report.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    done = subprocess.run(
        [
            browser,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    found = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not run; stderr: {done.stderr[-2000:]}"
    images = json.loads(html.unescape(found.group(1)))
    assert len(images) == 2 + 4 * 3  # two plots, then original/adversarial/perturbation x 4
    for im in images:
        assert im["width"] > 0, im
        assert im["varied"], im
    sizes = {(im["width"], im["height"]) for im in images if re.search(r"case \d", im["alt"])}
    assert sizes == {(SIDE, SIDE)}
    rows = _Rows()
    rows.feed(dom)
    assert rows.rows["cases"] == N_DONE
    assert rows.rows["summary"] == 4
    assert rows.rows["table1"] == 4 + 3  # four lines and the paper's QL, PI and LO rows


def test_the_report_orders_ours_before_the_baselines_by_the_registry() -> None:
    from bbattack.bench.summary import _attack_key

    names = ["zz-unknown", "art-hsj", "lo", "ta-square", "ql", "pi", "art-square"]
    assert sorted(names, key=_attack_key) == [
        *["ql", "pi", "lo"],
        *["art-hsj", "art-square", "ta-square"],
        "zz-unknown",
    ]


def test_ours_against_the_best_peer_of_the_same_grid_point() -> None:
    from bbattack.bench.summary import versus_peers

    def cases(attack: str, qs: list[int | None], eps: float = 0.05) -> list[dict[str, object]]:
        base = {"threat": "ql", "k": 0, "attack": attack, "eps": eps, "budget": 1000, "seed": 0}
        return [
            {
                **base,
                "image": f"photo{i}",
                "target_id": 7,
                "success": q is not None,
                "queries": q or 1000,
                "queries_at_success": q,
            }
            for i, q in enumerate(qs)
        ]

    (p,) = versus_peers(
        cases("square", [100, 200, 300])
        + cases("ta-square", [400, 500, 600])  # all succeed: the best peer
        + cases("art-square", [50, None, None])  # fewer queries, but 1 of 3 succeed
        + cases("ql", [900], eps=0.1)  # no peer at ε = 0.1
    )
    assert (p.ours.attack, p.peer.attack) == ("square", "ta-square")
    assert p.ratio == pytest.approx(200 / 500)
    # A peer that finished only some cases is compared on those cases alone.
    (p,) = versus_peers(cases("square", [100, 200, 300, 4000]) + cases("ta-square", [150, 250]))
    assert (p.ours.n, p.peer.n) == (2, 2)
    assert (p.ours.median_queries, p.peer.median_queries) == (150, 200)


# Ours (ql) and two peers on one grid point (QL, ε = 0.05, budget 1,000), on the same two
# images, targets and seed; pi has no peer at its grid point.
PEER_GRID: list[
    tuple[str, str, int, float, int, str, bool | None, int, int | None, float, float]
] = [
    ("ql", "ql", 0, 0.05, 1000, "cat", True, 100, 100, 0.05, 3.0),
    ("ql", "ql", 0, 0.05, 1000, "dog", True, 300, 300, 0.03, 1.0),
    ("ta-square", "ql", 0, 0.05, 1000, "cat", True, 50, 50, 0.05, 5.0),  # 1 of 2: not the best
    ("ta-square", "ql", 0, 0.05, 1000, "dog", False, 1000, None, 0.05, 5.0),
    ("art-square", "ql", 0, 0.05, 1000, "cat", True, 200, 200, 0.05, 5.0),  # 2 of 2: the best
    ("art-square", "ql", 0, 0.05, 1000, "dog", True, 600, 600, 0.05, 5.0),
    ("pi", "pi", 1, 0.05, 5000, "dog", True, 400, 400, 0.05, 2.0),
]
PEER_TABLE = "#### Ours against the best peer on the same cases"


@pytest.fixture(scope="module")
def peer_markdown(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = make_db(tmp_path_factory.mktemp("peers") / "bench.sqlite", PEER_GRID)
    with BenchDB.open(path, create=False) as db:
        return render_markdown(db)


def test_markdown_has_the_peer_table_where_ours_and_a_peer_share_a_grid_point(
    peer_markdown: str,
) -> None:
    lines = peer_markdown.splitlines()
    assert lines.count(PEER_TABLE) == 1
    start = lines.index(PEER_TABLE)
    assert start < lines.index("#### All finished cases")
    table = [line for line in lines[start + 2 : start + 6] if line.startswith("| ")]
    assert table[0].startswith("| threat model | ε | budget | ours | success | mean | median |")
    assert table[0].endswith(
        "| best peer | peer success | peer mean | peer median | median ratio |"
    )
    # One row: ql against art-square (2 of 2) rather than ta-square (1 of 2, but fewer
    # queries); pi has no peer. Median ratio 200 / 400.
    assert table[2:] == [
        "| QL: full scores | 0.05 | 1,000 | ql | 2/2 (100.0%) | 200 | 200 "
        "| art-square | 2/2 (100.0%) | 400 | 400 | 0.50 |"
    ]


def test_markdown_has_no_peer_table_where_ours_and_a_peer_share_no_grid_point(
    markdown: str,
) -> None:
    # The synthetic grid's ql and ta-square share no ε: no grid point to compare.
    assert "#### Ours against the best peer" not in markdown
    assert "best peer" not in markdown
