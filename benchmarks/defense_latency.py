"""The label service's latency with a query detector on, at 0, 10k and 1M stored queries
(issue 29): Blacklight (``blacklight:window=50,hash=mix64``) and PIHA (defaults), each built
through the spec parser, its store pre-filled through its own ``restore`` with N synthetic
stored queries (hashing N photos would take hours), then served on loopback (gcv schema) and
sent R single-image requests from one client, each a distinct benign photo variant
(``defense_fpr.py``'s photos and variations, the exact resubmissions left out). The same
detector's ``flags()`` and its store lookup alone are then timed in-process on R more
variants. A row without a defence is the baseline.

Two synthetic stores: ``random`` (every index key random: no query finds more than chance
collisions) and ``benign-like`` (each stored query also holds, with the share seen among
benign photos, the index keys that several photos share: Blacklight's windows of dark and
flat regions, PIHA's chunks of flat hue; learnt from variants that are never sent). A store of
real traffic looks like the second: its lookups meet long id lists.

    python benchmarks/defense_latency.py [--requests R] [--sizes 0,10000,1000000]
        [--stores random,benign-like] [--json PATH]

Writes benchmarks/results/defense_latency.json (or PATH) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import os
import resource
import secrets
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray

import bbattack as bb
from bbattack.bench.machine import describe
from bbattack.defenses import Blacklight, Piha, build, parse_spec
from bbattack.defenses.blacklight import fingerprint
from bbattack.defenses.piha import perceptual_bits
from bbattack.oracle import Query, Scores
from bbattack.remote import encode_png
from bbattack.service import create_app
from bbattack.service.runner import serve_in_thread
from defense_fpr import _array, _photos, _variants
from service import stats

RESULTS = Path(__file__).parent / "results"
SPECS = {"blacklight": "blacklight:window=50,hash=mix64", "piha": "piha"}
FloatArray = NDArray[np.float32]
_U64_MAX = np.iinfo(np.uint64).max
Store = Blacklight | Piha  # the detectors with a store to pre-fill


def _rss() -> int:
    """This process's resident bytes now (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _spec(name: str, n: int) -> str:
    """The detector's spec, with a capacity above ``n`` so that nothing is dropped."""
    return SPECS[name] + (f"{',' if ':' in SPECS[name] else ':'}capacity={2 * n}" if n else "")


def _synthetic(
    det: Store, n: int, rng: np.random.Generator, hot: dict[int, float]
) -> dict[str, Any]:
    """``det``'s snapshot with ``n`` stored queries of random fingerprints; each also holds
    each of the ``hot`` index keys with its probability (none: all random)."""
    snap = {**det.snapshot(), "next": n, "oldest": 0, "since_reset": n, "seen": n}
    if isinstance(det, Blacklight):
        fill = det.top - round(sum(hot.values()))  # the hot keys take part of the top S
        keys = rng.integers(0, _U64_MAX, n * fill, np.uint64, endpoint=True)
        ids = np.repeat(np.arange(n, dtype=np.int32), fill)
    else:
        # Random bits, with the chunk keys PIHA itself files: a chunk is about 20 bits, so at
        # 1M a query's chunks find stored hashes to verify, as they would in service.
        keys = np.zeros((n, len(det._bounds)), np.uint64)
        hashes = np.zeros((n, det._words), np.uint64)
        for at in range(0, n, 10_000):
            for i, b in enumerate(rng.integers(0, 2, (min(10_000, n - at), det.bits), np.bool_)):
                keys[at + i], hashes[at + i] = det._chunks(b), det._pack(b)
        snap["hashes"] = hashes
        ids = np.repeat(np.arange(n, dtype=np.int32), keys.shape[1])
    hot_ids = [
        np.unique(rng.integers(0, max(n, 1), rng.binomial(n, p), np.int32)) for p in hot.values()
    ]
    hot_keys = [np.full(len(i), k, np.uint64) for k, i in zip(hot, hot_ids, strict=True)]
    snap["index"] = {
        "keys": np.concatenate([keys.ravel(), *hot_keys]),
        "ids": np.concatenate([ids, *hot_ids]),
    }
    return snap


def _index_keys(det: Store, x: FloatArray) -> list[int]:
    """The keys ``det`` files one image under."""
    if isinstance(det, Blacklight):
        fp = fingerprint(x[0], det.step, det.window, det.stride, det.top, det.hash)
        return [int(k) for k in fp]
    return [int(k) for k in det._chunks(perceptual_bits(x[0], det.grid, det.sigma, det.channel))]


def _hot(det: Store, xs: list[FloatArray], owners: list[int]) -> dict[int, float]:
    """The index keys that more than one photo of ``xs`` holds, each with the share of ``xs``
    holding it: what a store of benign photos has many of (flat and dark regions)."""
    holders: dict[int, set[int]] = {}
    count: Counter[int] = Counter()
    for x, o in zip(xs, owners, strict=True):
        keys = set(_index_keys(det, x))
        count.update(keys)
        for k in keys:
            holders.setdefault(k, set()).add(o)
    return {k: count[k] / len(xs) for k, o in holders.items() if len(o) > 1}


def _prefilled(
    name: str, n: int, hot: dict[int, float], seed: int
) -> tuple[Store, dict[str, float]]:
    det = build(parse_spec(_spec(name, n)))
    assert isinstance(det, Blacklight | Piha)
    gc.collect()
    rss0, t0 = _rss(), time.perf_counter()
    snap = _synthetic(det, n, np.random.default_rng(seed), hot)
    det.restore(snap)
    seconds = time.perf_counter() - t0
    del snap
    gc.collect()
    assert det.stored == n, (name, n, det.stored)
    mem = {
        "prefill_s": seconds,
        "store_mb": det.nbytes / 1e6,
        "rss_growth_mb": (_rss() - rss0) / 1e6,
    }
    return det, mem


def _serve(
    model: bb.Classifier, defenses: list[Store], payloads: list[str], warm: list[str]
) -> dict[str, Any]:
    """One client, one image a request: latency over every request, and over the answered."""
    key = secrets.token_urlsafe(12)
    lat, ok = [], []
    with (
        serve_in_thread(create_app(model, api_keys=[key], defenses=defenses)) as url,
        httpx.Client(base_url=url, headers={"X-Goog-Api-Key": key}, timeout=120) as c,
    ):
        for i, p in enumerate(warm + payloads):
            body = {
                "requests": [{"image": {"content": p}, "features": [{"type": "LABEL_DETECTION"}]}]
            }
            t = time.perf_counter()
            r = c.post("/v1/images:annotate", json=body)
            dt = time.perf_counter() - t
            if r.status_code not in (200, 400):  # 400: the defence refused it
                r.raise_for_status()
            if i >= len(warm):
                lat.append(dt)
                ok.append(r.status_code == 200)
    a = np.array(lat)
    answered = a[np.array(ok, bool)]
    return {
        "service": {**stats(lat, len(lat), float(a.sum())), "mean_ms": 1000 * float(a.mean())},
        "answered_p99_ms": 1000 * float(np.percentile(answered, 99)) if len(answered) else None,
        "refused": len(ok) - sum(ok),
    }


def _in_process(det: Store, xs: list[FloatArray]) -> dict[str, float]:
    """Per query: ``flags()`` (hash, look up, store) and the store lookup alone."""
    full, lookup = [], []
    for i, x in enumerate(xs):
        if isinstance(det, Blacklight):
            fp = fingerprint(x[0], det.step, det.window, det.stride, det.top, det.hash)
            t = time.perf_counter()
            det.match(fp)
        else:
            bits = perceptual_bits(x[0], det.grid, det.sigma, det.channel)
            t = time.perf_counter()
            det.distance(bits)
        lookup.append(time.perf_counter() - t)
        q = Query(x, np.array([i], np.int64), "benign", Scores(), "benign")
        t = time.perf_counter()
        det.flags(q)
        full.append(time.perf_counter() - t)
    f, lk = 1000 * np.array(full), 1000 * np.array(lookup)
    return {
        "flags_p50_ms": float(np.percentile(f, 50)),
        "flags_p99_ms": float(np.percentile(f, 99)),
        "lookup_p50_ms": float(np.percentile(lk, 50)),
        "lookup_p99_ms": float(np.percentile(lk, 99)),
    }


def _stream(requests: int) -> tuple[list[FloatArray], list[str], list[int]]:
    """Distinct benign variants, every photo's original first, then each kind of variation in
    turn (the fewest near-duplicates early); their PNG payloads; the photo each comes from."""
    rng = np.random.default_rng(0)
    per_photo = [
        [_array(v) for kind, v in _variants(im, rng) if kind != "resubmitted"]
        for im in _photos(None)
    ]
    order = [(k, o) for k in range(len(per_photo[0])) for o in range(len(per_photo))]
    xs = [per_photo[o][k] for k, o in order]
    if len(xs) < 2 * requests + 3 + 100:
        raise SystemExit(f"only {len(xs)} benign variants; ask for fewer --requests")
    payloads = [base64.b64encode(encode_png(x[0])).decode() for x in xs]
    return xs, payloads, [o for _, o in order]


def _row(
    model: bb.Classifier, name: str, n: int, store: str, stream: tuple[Any, ...], r: int
) -> dict[str, Any]:
    """One detector at one store size: pre-fill, serve, then time it in-process."""
    xs, payloads, owners = stream
    hot: dict[int, float] = {}
    if store == "benign-like":  # keys learnt from variants that are never sent
        det = build(parse_spec(SPECS[name]))
        assert isinstance(det, Blacklight | Piha)
        hot = _hot(det, xs[2 * r : -3], owners[2 * r : -3])
    det, mem = _prefilled(name, n, hot, seed=n)
    row = {"detector": name, "spec": _spec(name, n), "stored": n, "store": store, **mem}
    row["hot_keys"], row["hot_keys_per_query"] = len(hot), sum(hot.values())
    row.update(_serve(model, [det], payloads[:r], payloads[-3:]))
    row.update(_in_process(det, xs[r : 2 * r]))
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--sizes", default="0,10000,1000000")
    ap.add_argument(
        "--stores", default="random,benign-like", help="the synthetic stores (above size 0)"
    )
    ap.add_argument("--json", type=Path, default=RESULTS / "defense_latency.json")
    args = ap.parse_args()
    os.environ.setdefault("BBATTACK_THREADS", "1")  # the ONNX session's threads
    r, t_start = args.requests, time.perf_counter()
    model = bb.load_model("lite0")
    if model.backend == "torch":
        import torch

        torch.set_num_threads(1)
    stream = _stream(r)
    rows: list[dict[str, Any]] = [
        {"detector": "none", "stored": None, **_serve(model, [], stream[1][:r], stream[1][-3:])}
    ]
    print(rows[-1], flush=True)
    for name in SPECS:
        for n in (int(s) for s in args.sizes.split(",")):
            for store in args.stores.split(",") if n else ["empty"]:
                rows.append(_row(model, name, n, store, stream, r))
                print(rows[-1], flush=True)
                gc.collect()
    report = {
        "date": date.today().isoformat(),
        "machine": describe(),
        "backend": model.backend,
        "requests": r,
        "wall_s": time.perf_counter() - t_start,
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    _table(rows)


def _table(rows: list[dict[str, Any]]) -> None:
    print(
        "| detector | stored | service p50 ms | service p99 ms | detector p50/p99 ms "
        "| lookup p50/p99 ms | store MB | refused |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for w in rows:
        s, det = w["service"], w["detector"] != "none"
        stored = f"{w['stored']:,} ({w['store']})" if det else "-"
        print(
            f"| {w['detector']} | {stored} | {s['p50_ms']:.1f} "
            f"| {s['p99_ms']:.1f} "
            + (
                f"| {w['flags_p50_ms']:.2f} / {w['flags_p99_ms']:.2f} "
                f"| {w['lookup_p50_ms']:.3f} / {w['lookup_p99_ms']:.3f} | {w['store_mb']:.1f} "
                if det
                else "| - | - | - "
            )
            + f"| {w['refused']} |"
        )


if __name__ == "__main__":
    main()
