"""Label-service throughput and latency on loopback, against in-process model calls.

Concurrent clients (threads, one httpx.Client each) send POST /v1/images:annotate with 1 or 16
images per request for a fixed number of requests; we record per-request latency (p50/p99)
and images/s. The same run times direct in-process calls of the same model.

Usage: python benchmarks/service.py [--clients 1,4,8] [--requests 40]
Writes benchmarks/results/service.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import numpy as np

import bbattack as bb
from bbattack.bench.machine import describe
from bbattack.remote import encode_png
from bbattack.service import create_app
from bbattack.service.runner import serve_in_thread

RESULTS = Path(__file__).parent / "results"


def stats(lat: list[float], images: int, wall: float) -> dict[str, float]:
    a = np.array(lat) * 1000
    return {
        "images_per_s": images / wall,
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
    }


def in_process(model: bb.Classifier, x: np.ndarray, batch: int, n: int) -> dict[str, float]:
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        xb = x[(np.arange(batch) + i) % len(x)]
        t = time.perf_counter()
        model(xb)
        lat.append(time.perf_counter() - t)
    return stats(lat, n * batch, time.perf_counter() - t0)


def over_http(
    url: str, key: str, payloads: list[str], batch: int, clients: int, requests: int
) -> dict[str, float]:
    lat: list[float] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        with httpx.Client(base_url=url, headers={"X-Goog-Api-Key": key}, timeout=60) as c:
            for i in range(requests):
                body = {
                    "requests": [
                        {
                            "image": {"content": payloads[(w * 7 + i + j) % len(payloads)]},
                            "features": [{"type": "LABEL_DETECTION", "maxResults": 10}],
                        }
                        for j in range(batch)
                    ]
                }
                t = time.perf_counter()
                r = c.post("/v1/images:annotate", json=body)
                r.raise_for_status()
                with lock:
                    lat.append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return stats(lat, clients * requests * batch, time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", default="1,4,8")
    ap.add_argument("--requests", type=int, default=40)
    args = ap.parse_args()
    model = bb.load_model()
    x = np.stack([bb.load_image(p) for p in bb.bundled_photos().values()])
    payloads = [base64.b64encode(encode_png(im)).decode() for im in x]
    key = secrets.token_urlsafe(12)
    rows: list[dict[str, Any]] = []
    for batch in (1, 16):
        n = max(10, args.requests // batch * 4)
        rows.append(
            {"path": "in-process", "clients": 1, "batch": batch, **in_process(model, x, batch, n)}
        )
    with serve_in_thread(create_app(model, api_keys=[key])) as url:
        over_http(url, key, payloads, 1, 1, 5)  # warm-up
        for batch in (1, 16):
            for clients in (int(c) for c in args.clients.split(",")):
                reqs = max(4, args.requests // (batch if batch > 1 else 1))
                rows.append(
                    {
                        "path": "HTTP",
                        "clients": clients,
                        "batch": batch,
                        **over_http(url, key, payloads, batch, clients, reqs),
                    }
                )
                print(rows[-1], flush=True)
    report = {
        "date": date.today().isoformat(),
        "machine": describe(),
        "backend": model.backend,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "service.json").write_text(json.dumps(report, indent=2) + "\n")
    print("| path | clients | images/request | images/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['path']} | {r['clients']} | {r['batch']} | {r['images_per_s']:.0f} "
            f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |"
        )


if __name__ == "__main__":
    main()
