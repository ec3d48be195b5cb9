"""False positives of the query detectors on benign traffic (issue 29): the package photos
(scikit-image/scikit-learn/matplotlib's bundled ones, foolbox's, ai-benchmark's where
installed) at 224 x 224, each submitted as it is and under natural variation: two crops
(90-97% of the side, resized back), two JPEG re-encodings (quality 60-90, and 95), brightness
(x0.85-1.15), a small rotation (+-2-5 degrees), and the same photo resubmitted: 8 queries per
photo. One stream through one store per detector (Blacklight and PIHA are account-oblivious;
stateful detection sees one key, the worst case), photo after photo with each photo's
variants together, as a user re-uploading would.

A flagged query counts as a false positive whatever the action: the query would have been
refused (``reject``/``ban``) or answered stale (``silent``). Resubmissions of the same photo
are flagged by design (they are exact duplicates); the figures say so separately.

    python benchmarks/defense_fpr.py [--photos N] [--json out.json] [--defense SPEC ...]
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections import Counter
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageEnhance

from bbattack.defenses import Detector, build, parse_spec
from bbattack.errors import UserInputError
from bbattack.oracle import Query, Scores
from bbattack.photosets import photo_set

SIZE = 224
FloatArray = NDArray[np.float32]


def _photos(limit: int | None) -> list[Image.Image]:
    out: list[Image.Image] = []
    for name in ("bundled", "foolbox", "ai-benchmark"):
        try:
            found = photo_set(name)
        except UserInputError:  # a set whose package is not installed
            continue
        for p in found:
            with Image.open(p.path) as im:
                out.append(im.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR))
    return out[:limit]


def _variants(im: Image.Image, rng: np.random.Generator) -> list[tuple[str, Image.Image]]:
    """The photo and its natural variations, in the order a user might send them."""
    side = int(SIZE * rng.uniform(0.90, 0.97))
    x0, y0 = (int(v) for v in rng.integers(0, SIZE - side + 1, 2))
    crop = im.crop((x0, y0, x0 + side, y0 + side)).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(rng.integers(60, 91)))
    jpeg = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    bright = ImageEnhance.Brightness(im).enhance(
        float(rng.choice([-1, 1]) * rng.uniform(0.05, 0.15) + 1)
    )
    angle = float(rng.choice([-1, 1]) * rng.uniform(2.0, 5.0))
    rot = im.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    side2 = int(SIZE * rng.uniform(0.90, 0.97))
    crop2 = im.crop((0, 0, side2, side2)).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    buf2 = io.BytesIO()
    im.save(buf2, "JPEG", quality=95)
    jpeg2 = Image.open(io.BytesIO(buf2.getvalue())).convert("RGB")
    return [
        ("original", im),
        ("crop", crop),
        ("jpeg", jpeg),
        ("brightness", bright),
        ("rotation", rot),
        ("crop", crop2),
        ("jpeg", jpeg2),
        ("resubmitted", im),
    ]


def _array(im: Image.Image) -> FloatArray:
    return np.asarray(im, np.float32).transpose(2, 0, 1)[None] / np.float32(255.0)


# Keyed by the spec a bench grid or `--defense` takes, so that `bbattack report --benign`
# finds each figure's row.
SPECS = ("blacklight:window=50,hash=mix64", "blacklight:window=50", "piha", "stateful")


def _detectors(specs: tuple[str, ...] = SPECS) -> dict[str, Detector]:
    out = {}
    for spec in specs:
        det = build(parse_spec(spec))
        assert isinstance(det, Detector), spec
        out[spec] = det
    return out


def measure(
    limit: int | None = None, seed: int = 0, specs: tuple[str, ...] = SPECS
) -> dict[str, Any]:
    """Each detector's flagged share of the benign stream, overall and by variation."""
    rng = np.random.default_rng(seed)
    stream = [(kind, _array(v)) for im in _photos(limit) for kind, v in _variants(im, rng)]
    n_photos = sum(k == "original" for k, _ in stream)
    out: dict[str, Any] = {"queries": len(stream), "photos": n_photos, "detectors": {}}
    for name, det in _detectors(specs).items():
        t0 = time.perf_counter()
        flagged: Counter[str] = Counter()
        for i, (kind, x) in enumerate(stream):
            q = Query(x, np.array([i], np.int64), "benign", Scores(), "benign")
            if bool(det.flags(q)[0]):
                flagged[kind] += 1
        total = sum(flagged.values())
        dup = flagged["resubmitted"]
        n_dup = sum(k == "resubmitted" for k, _ in stream)
        out["detectors"][name] = {
            "spec": name,
            "flagged": total,
            "fpr": total / len(stream),
            "fpr_without_resubmissions": (total - dup) / (len(stream) - n_dup),
            # A photo flagged against the other photos before it: different images alike.
            "fpr_across_photos": flagged["original"] / n_photos,
            "by_variation": dict(flagged),
            "ms_per_query": 1000 * (time.perf_counter() - t0) / len(stream),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=None, help="at most this many photos")
    ap.add_argument("--json", default=None, help="write the figures here too")
    ap.add_argument(
        "--defense", action="append", default=None, help=f"a detector spec (default: {SPECS})"
    )
    args = ap.parse_args()
    res = measure(args.photos, specs=tuple(args.defense or SPECS))
    print(f"{res['queries']} benign queries ({res['photos']} photos x 8)")
    for name, d in res["detectors"].items():
        print(
            f"{name}: {d['flagged']} flagged, FPR {100 * d['fpr']:.2f}% "
            f"({100 * d['fpr_without_resubmissions']:.2f}% without resubmissions, "
            f"{100 * d['fpr_across_photos']:.2f}% of photos flagged against other photos); "
            f"by variation {d['by_variation']}; {d['ms_per_query']:.1f} ms/query"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
