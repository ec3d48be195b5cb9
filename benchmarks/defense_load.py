"""/healthz latency while 8 clients attack the label service (issue 29's goal: p99 under
100 ms with a defence on).

The service (gcv schema, EfficientNet-Lite0, ``create_app`` served by uvicorn) runs in its own
process, as ``bbattack serve`` does, behind ``blacklight:window=50,hash=mix64``, behind ``piha``
(both action reject), and with no defence. Each of 8 attacker threads (its own API key and
photo) runs a Square-like L-inf random search for the whole run: stripes of ±eps, then at
each step a random square window (side from Square's p schedule) set to ±eps per channel,
kept when the photo's first label scores lower. One image per request, the body built by the
gcv client that ``bbattack attack --endpoint`` uses; a refusal (4xx) is counted, its step
dropped, never retried. A separate process polls ``GET /healthz`` every 50 ms.

    python benchmarks/defense_load.py [--seconds 60] [--clients 8] [--eps 0.05] [--json PATH]

Writes benchmarks/results/defense_load.json (or PATH) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray

import bbattack as bb
from bbattack.attacks._windows import paper_p, side
from bbattack.bench.machine import describe
from bbattack.images import encode_png
from bbattack.remote.retry import GarbledError
from bbattack.remote.schemas.gcv import ANNOTATE_PATH, labels_of, request_body

RESULTS = Path(__file__).parent / "results"
CONFIGS = {"none": None, "blacklight": "blacklight:window=50,hash=mix64", "piha": "piha"}
FloatArray = NDArray[np.float32]
_JSON = {"Content-Type": "application/json"}
_SQUARE_ITERS = 10_000  # Square's own budget: the p schedule is stretched over it


def _serve(spec: str | None, keys: list[str], conn: Connection) -> None:
    """The service's process: load, serve, send the URL; on "stop", send the defences'
    counters and the keys' usage, and exit."""
    from bbattack.defenses import build, parse_spec
    from bbattack.service import create_app
    from bbattack.service.runner import serve_in_thread

    model = bb.load_model("lite0")
    layers = [build(parse_spec(spec))] if spec else []
    app = create_app(model, api_keys=keys, defenses=layers)
    with serve_in_thread(app) as url:
        conn.send((url, model.backend))
        conn.recv()
        conn.send(
            {
                "defense": [d.counters() for d in app.state.defenses if hasattr(d, "counters")],
                "billed": int(sum(app.state.usage.values())),
            }
        )


def _poll(url: str, seconds: float, interval: float, conn: Connection) -> None:
    """The /healthz client's process: on "go", one GET every ``interval`` s for ``seconds``;
    send back (start offset, latency) pairs in seconds and the non-200 count."""
    out: list[tuple[float, float]] = []
    bad = 0
    with httpx.Client(base_url=url, timeout=30) as c:
        c.get("/healthz")  # the connection, opened before the clock starts
        conn.send("ready")
        conn.recv()
        t0 = time.perf_counter()
        tick = t0
        while (now := time.perf_counter()) - t0 < seconds:
            r = c.get("/healthz")
            out.append((now - t0, time.perf_counter() - now))
            bad += r.status_code != 200
            tick += interval
            time.sleep(max(0.0, tick - time.perf_counter()))
    conn.send((out, bad))


@dataclass
class _Client:
    """One attacker's tallies."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    first_refused_at: int | None = None


def _attack(url: str, key: str, x: FloatArray, eps: float, until: float, seed: int) -> _Client:
    """Square-like random search on ``x`` until ``until`` (perf_counter); one image a call."""
    rng = np.random.default_rng(seed)
    _, h, w = x.shape
    adv = np.clip(x + rng.choice([-eps, eps], size=(3, 1, w)), 0, 1).astype(np.float32)
    cand, best, label, it, me = adv, np.inf, "", 0, _Client()
    with httpx.Client(base_url=url, headers={"X-Goog-Api-Key": key}, timeout=120) as c:
        while time.perf_counter() < until:
            body = request_body([encode_png(cand)], 10)
            t = time.perf_counter()
            r = c.post(ANNOTATE_PATH, content=body, headers=_JSON)
            me.latencies.append(time.perf_counter() - t)
            me.statuses[r.status_code] += 1
            if r.status_code == 200:
                try:
                    labels = labels_of(r.json()["responses"][0])
                except GarbledError:  # an image the service could not label: no signal
                    labels = []
                label = label or (labels[0][0] if labels else "")
                loss = dict(labels).get(label, 0.0)
                if loss < best:
                    adv, best = cand, loss
            elif me.first_refused_at is None:
                me.first_refused_at = sum(me.statuses.values())
            s = int(side(paper_p(0.05, np.array([it]), np.array([_SQUARE_ITERS])), h, w)[0])
            r0, c0 = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
            cand = adv.copy()
            win = x[:, r0 : r0 + s, c0 : c0 + s] + rng.choice([-eps, eps], size=(3, 1, 1))
            cand[:, r0 : r0 + s, c0 : c0 + s] = np.clip(win, 0, 1)
            it += 1
    return me


def _second(pair: list[float]) -> float:
    return pair[1]


def _ms(a: list[float], q: float) -> float:
    return 1000 * float(np.percentile(a, q)) if a else float("nan")


def _run(name: str, photos: list[FloatArray], args: argparse.Namespace) -> dict[str, Any]:
    """One configuration: its own service process, 8 attackers, one /healthz poller."""
    ctx = mp.get_context("spawn")  # fresh processes: no forked threads or model sessions
    keys = [secrets.token_urlsafe(12) for _ in range(args.clients)]
    srv, srv_child = ctx.Pipe()
    server = ctx.Process(target=_serve, args=(CONFIGS[name], keys, srv_child), daemon=True)
    server.start()
    url, backend = srv.recv()
    # The model's first call (ONNX warm-up) and a connection, before the clock starts.
    with httpx.Client(base_url=url, headers={"X-Goog-Api-Key": keys[0]}, timeout=120) as c:
        c.post(ANNOTATE_PATH, content=request_body([encode_png(photos[-1])], 10), headers=_JSON)
    pol, pol_child = ctx.Pipe()
    poller = ctx.Process(target=_poll, args=(url, args.seconds, 0.05, pol_child), daemon=True)
    poller.start()
    assert pol.recv() == "ready"
    results: list[_Client] = [_Client() for _ in keys]
    until = time.perf_counter() + args.seconds

    def work(i: int) -> None:
        x = photos[i % len(photos)]
        results[i] = _attack(url, keys[i], x, args.eps, until, seed=i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(keys))]
    pol.send("go")
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if not all(c.latencies for c in results):
        raise SystemExit(f"{name}: an attacker sent nothing (its traceback is above)")
    health, health_bad = pol.recv()
    poller.join()
    srv.send("stop")
    served = srv.recv()
    server.join()
    lat = [v for c in results for v in c.latencies]
    statuses: Counter[int] = sum((c.statuses for c in results), Counter())
    hl = [v for _, v in health]
    worst = sorted(([round(t, 2), round(1000 * v, 1)] for t, v in health), key=_second)
    return {
        "config": name,
        "spec": CONFIGS[name],
        "backend": backend,
        "healthz": {
            "samples": len(hl),
            "non_200": health_bad,
            "p50_ms": _ms(hl, 50),
            "p99_ms": _ms(hl, 99),
            "max_ms": 1000 * max(hl, default=float("nan")),
            "over_100ms": sum(v > 0.1 for v in hl),
            "worst_at_s_ms": worst[-5:],  # (seconds into the run, latency ms), worst last
        },
        "attack": {
            "sent": len(lat),
            "answered": statuses[200],
            "refused": len(lat) - statuses[200],
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "first_refused_at": [c.first_refused_at for c in results],
            "p50_ms": _ms(lat, 50),
            "p99_ms": _ms(lat, 99),
            "images_per_s": statuses[200] / wall,  # answered (labelled) images
            "requests_per_s": len(lat) / wall,  # answered or refused: what the service handled
            "wall_s": wall,
        },
        "server": served,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="attack time per configuration")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--eps", type=float, default=0.05)
    ap.add_argument("--configs", default=",".join(CONFIGS), help="of: none,blacklight,piha")
    ap.add_argument("--json", type=Path, default=RESULTS / "defense_load.json")
    args = ap.parse_args()
    os.environ.setdefault("BBATTACK_THREADS", "1")  # the service's ONNX session: one thread
    t_start = time.perf_counter()
    photos = [bb.load_image(p) for p in bb.bundled_photos().values()]
    rows = []
    for name in args.configs.split(","):
        rows.append(_run(name, photos, args))
        print(json.dumps(rows[-1]), flush=True)
    report = {
        "date": date.today().isoformat(),
        "machine": describe(),
        "cpus": os.cpu_count(),
        "seconds": args.seconds,
        "clients": args.clients,
        "eps": args.eps,
        "healthz_interval_s": 0.05,
        "wall_s": time.perf_counter() - t_start,
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    _table(rows)


def _table(rows: list[dict[str, Any]]) -> None:
    print(
        "| defence | /healthz p50 / p99 / max ms | /healthz samples | attack requests | refused "
        "| attack p50 / p99 ms | images/s served | requests/s handled |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        h, a = r["healthz"], r["attack"]
        print(
            f"| {r['spec'] or 'none'} | {h['p50_ms']:.1f} / {h['p99_ms']:.1f} / {h['max_ms']:.1f} "
            f"| {h['samples']} | {a['sent']} | {a['refused']} "
            f"| {a['p50_ms']:.0f} / {a['p99_ms']:.0f} | {a['images_per_s']:.1f} "
            f"| {a['requests_per_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
