"""Photo sets that ship inside installed packages, for benchmarks: nothing is downloaded.

- ``bundled``: the 16 photos of scikit-image, scikit-learn and matplotlib (no labels);
- ``foolbox``: the foolbox wheel's 20 ImageNet validation-style photos, each with its ImageNet
  class in the file name (``foolbox/data/imagenet_07_609.jpg``: photo 7, class 609);
- ``ai-benchmark``: ai-benchmark's 100 ImageNet-style photos (``ai_benchmark/data/
  classification/0..99.jpg``), no labels.

The project's two fixed **splits**, never mixed in one grid: ``tuning`` (foolbox's 20 labelled
photos and ai-benchmark's photos 50-99), on which every default is chosen, and ``heldout``
(ai-benchmark's photos 0-49), on which the figures are measured (``benchmarks/README-sets.md``).
A labelled photo qualifies when the target's top-1 is its label, an unlabelled one at a top-1
probability of at least the grid's ``min_confidence``.

The package files are found through the installed distribution's file list, so the packages are
never imported (foolbox's import pulls eagerpy, ai-benchmark's TensorFlow).
"""

from __future__ import annotations

import importlib.metadata as md
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from .errors import UserInputError
from .images import bundled_photos

__all__ = [
    "PHOTO_SETS",
    "SPLITS",
    "Photo",
    "SetName",
    "SplitName",
    "photo_set",
    "qualify",
    "split_photos",
]

SetName = Literal["bundled", "foolbox", "ai-benchmark"]
PHOTO_SETS: tuple[SetName, ...] = ("bundled", "foolbox", "ai-benchmark")
SplitName = Literal["tuning", "heldout"]
# Chosen once (issue #31): defaults are tuned on one, figures measured on the other. Each
# entry: a set and the file numbers taken from it. ai-benchmark's photos are split in halves
# so that both splits hold its kind of photo: foolbox's alone were far easier (untargeted
# Square needed a median of 2 queries on them, against tens on ai-benchmark's).
SPLITS: dict[SplitName, tuple[tuple[SetName, range], ...]] = {
    "tuning": (("foolbox", range(0, 20)), ("ai-benchmark", range(50, 100))),
    "heldout": (("ai-benchmark", range(0, 50)),),
}
_FOOLBOX = re.compile(r"foolbox/data/imagenet_(\d+)_(\d+)\.jpg")
_AIB = re.compile(r"ai_benchmark/data/classification/(\d+)\.jpg")


@dataclass(frozen=True)
class Photo:
    """One photo of a set: a name unique across sets, its file, and its ImageNet class if the
    set is labelled."""

    name: str
    path: Path
    label: int | None
    set: SetName


def _package_files(dist: str, pattern: re.Pattern[str]) -> list[tuple[re.Match[str], Path]]:
    try:
        d = md.distribution(dist)
    except md.PackageNotFoundError:
        raise UserInputError(
            f"photo set {dist!r}: the package {dist} is not installed "
            "(pip install 'bbattack[photos]')"
        ) from None
    out = []
    for f in d.files or []:
        m = pattern.fullmatch(str(f).replace("\\", "/"))
        if m is not None:
            p = Path(str(d.locate_file(f)))
            if p.is_file():
                out.append((m, p))
    if not out:
        raise UserInputError(f"photo set {dist!r}: the installed package holds no photos")
    return out


def split_photos(split: SplitName, name: str) -> list[Photo]:
    """The photos of set ``name`` that belong to ``split`` (none if the split does not use it)."""
    numbers = [r for s, r in SPLITS[split] if s == name]
    return [ph for ph in photo_set(name) if any(_number(ph) in r for r in numbers)]


def _number(ph: Photo) -> int:
    # The file's own number: foolbox-07, aib-003.
    return int(ph.name.rpartition("-")[2])


def photo_set(name: str) -> list[Photo]:
    """The photos of set ``name``, in a stable order; UserInputError for an unknown set or a
    package that is not installed."""
    if name == "bundled":
        return [Photo(n, p, None, "bundled") for n, p in bundled_photos().items()]
    if name == "foolbox":
        rows = _package_files("foolbox", _FOOLBOX)
        rows.sort(key=lambda r: int(r[0].group(1)))
        return [
            Photo(f"foolbox-{int(m.group(1)):02d}", p, int(m.group(2)), "foolbox") for m, p in rows
        ]
    if name == "ai-benchmark":
        rows = _package_files("ai-benchmark", _AIB)
        rows.sort(key=lambda r: int(r[0].group(1)))
        return [Photo(f"aib-{int(m.group(1)):03d}", p, None, "ai-benchmark") for m, p in rows]
    raise UserInputError(f"unknown photo set {name!r}; have: {', '.join(PHOTO_SETS)}")


def qualify(
    labels: list[int | None], probs: NDArray[np.floating], min_confidence: float
) -> tuple[NDArray[np.bool_], str]:
    """Which photos a target qualifies, and the rule in words (for the report's denominator):
    a labelled photo when the model's top-1 is its label, an unlabelled one when the top-1
    probability is at least ``min_confidence``. ``probs`` (N, classes), one row per photo."""
    top = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    keep = np.array(
        [
            (lab is not None and int(t) == lab) or (lab is None and float(c) >= min_confidence)
            for lab, t, c in zip(labels, top, conf, strict=True)
        ],
        bool,
    )
    parts = []
    if any(lab is not None for lab in labels):
        parts.append("labelled: the target's top-1 is the label")
    if any(lab is None for lab in labels):
        parts.append(f"unlabelled: the target's top-1 probability is at least {min_confidence:g}")
    return keep, "; ".join(parts)
