"""Expand a validated config into cases: images, their clean classes, seeded targets.

A case is identified by a hash of everything that defines it (attack and params, threat, k, ε,
budget, image bytes, target, start image, seed, model, backend), so the same grid always gives
the same ids and a resumed run finds its finished cases.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ImageLoadError, UserInputError
from ..images import bundled_photos, decode_png, encode_png, load_image
from ..models import Classifier, TorchClassifier, load_model, to_backend
from ..photosets import photo_set, qualify, split_photos
from .config import BenchConfig, ModelSpec
from .db import CaseRow

__all__ = [
    "SourceImage",
    "build_cases",
    "collect_images",
    "draw_targets",
    "iter_cases",
    "open_model",
    "select_images",
]


@dataclass(frozen=True)
class SourceImage:
    name: str
    path: str
    png: bytes  # the model input, 8-bit: what every worker decodes
    label: int | None = None  # the ImageNet class of a labelled package photo
    set: str | None = None  # the package photo set it comes from (None: bundled or a path)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.png).hexdigest()[:16]

    def array(self) -> NDArray[np.float32]:
        return decode_png(self.png)


def open_model(spec: ModelSpec) -> Classifier:
    """The classifier a config names: a model spec (a built-in, a file, ...) or a factory's
    Classifier."""
    if spec.name is not None:
        return load_model(spec.name, backend=spec.backend)
    assert spec.factory is not None
    mod_name, _, fn_name = spec.factory.partition(":")
    # A user's factory can fail in any way; it gets one line naming it, not a traceback.
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except Exception as e:  # noqa: BLE001
        raise UserInputError(
            f"model.factory: cannot import {spec.factory!r} ({type(e).__name__}: {e}); "
            "its module must be importable (PYTHONPATH)"
        ) from None
    try:
        model = fn()
    except Exception as e:  # noqa: BLE001
        raise UserInputError(
            f"model.factory: {spec.factory}() failed ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(model, Classifier):
        raise UserInputError(
            f"model.factory: {spec.factory} returned {type(model).__name__}, "
            "not a bbattack Classifier"
        )
    if isinstance(model, TorchClassifier):
        return to_backend(model, spec.backend, batch_size=model.batch_size)
    if spec.backend != "auto":
        raise UserInputError("model.backend: only a torch model can be moved to a backend")
    return model


def collect_images(cfg: BenchConfig, base: Path, size: tuple[int, int]) -> list[SourceImage]:
    """Load every image the config names, at the model's input size: bundled photos, paths,
    then every photo of the package sets. ``limit`` is applied here when there are no sets;
    with sets it applies after :func:`select_images` has kept the photos that qualify."""
    out: list[SourceImage] = []
    photos = bundled_photos()
    names = list(photos) if cfg.images.photos == "all" else cfg.images.photos
    for name in names:
        out.append(SourceImage(name, str(photos[name]), encode_png(load_image(photos[name], size))))
    for i, raw in enumerate(cfg.images.paths):
        p = Path(raw).expanduser()
        p = p if p.is_absolute() else base / p
        try:
            x = load_image(p, size)
        except ImageLoadError as e:
            raise UserInputError(f"images.paths[{i}]: {e}") from None
        out.append(SourceImage(p.stem, str(p), encode_png(x)))
    sets = cfg.images.set_names()
    split = cfg.images.split
    for set_name in sets:
        for ph in photo_set(set_name) if split is None else split_photos(split, set_name):
            png = encode_png(load_image(ph.path, size))
            out.append(SourceImage(ph.name, str(ph.path), png, ph.label, set_name))
    seen: set[str] = set()
    for im in out:
        if im.name in seen:
            raise UserInputError(f"images: two images are named {im.name!r}; rename one")
        seen.add(im.name)
    if cfg.images.limit and not sets:
        return out[: cfg.images.limit]
    return out


def select_images(
    cfg: BenchConfig, images: list[SourceImage], probs: NDArray[np.floating]
) -> tuple[list[SourceImage], dict[str, Any]]:
    """Keep the package photos the target qualifies (a labelled photo: its top-1 is the label;
    an unlabelled one: a top-1 probability of at least ``min_confidence``), every other image,
    then the first ``limit``. Also returns, per set, how many were offered and kept and the
    rule: the report's denominator."""
    sets = cfg.images.set_names()
    if not sets:
        return images, {}
    keep = np.ones(len(images), bool)
    report: dict[str, Any] = {}
    for set_name in sets:
        rows = [i for i, im in enumerate(images) if im.set == set_name]
        labels = [images[i].label for i in rows]
        ok, rule = qualify(labels, probs[rows], cfg.images.min_confidence)
        keep[rows] = ok
        report[set_name] = {"offered": len(rows), "qualified": int(ok.sum()), "rule": rule}
        if cfg.images.split is not None:
            report[set_name]["split"] = cfg.images.split
    out = [im for im, k in zip(images, keep.tolist(), strict=True) if k]
    if cfg.images.split is not None:
        out = _interleaved(out, sets)
    if cfg.images.limit:
        out = out[: cfg.images.limit]
    for set_name in sets:
        report[set_name]["used"] = sum(im.set == set_name for im in out)
    return out, report


def _interleaved(images: list[SourceImage], sets: list[str]) -> list[SourceImage]:
    # A split's sets take turns, so that its first N photos hold each set's kind of photo
    # (file order would give the tuning split's first 17 all to foolbox).
    rows = [[im for im in images if im.set == s] for s in sets]
    rest = [im for im in images if im.set not in sets]
    return [im for turn in itertools.zip_longest(*rows) for im in turn if im is not None] + rest


def _rng(seed: int, image: str, t: int) -> np.random.Generator:
    # Keyed by the image's name, so adding an image does not change the others' targets.
    key = int.from_bytes(hashlib.sha256(image.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, key, t])


def draw_targets(
    cfg: BenchConfig, images: list[SourceImage], clean: dict[str, int], num_classes: int
) -> dict[str, list[tuple[int, str | None]]]:
    """Per image: ``per_image`` (target class, start image) pairs, never the clean class."""
    out: dict[str, list[tuple[int, str | None]]] = {}
    for im in images:
        pairs: list[tuple[int, str | None]] = []
        # Each other image whose clean class differs is a start image for its class.
        others = [o.name for o in images if clean[o.name] != clean[im.name]]
        if cfg.targets.pool == "classes":
            available = num_classes - 1
        else:
            available = len({clean[o] for o in others})
        if cfg.targets.per_image > available:
            raise UserInputError(
                f"targets.per_image: {cfg.targets.per_image} targets per image, but "
                f"{im.name!r} has only {available} possible target classes"
                + ("" if cfg.targets.pool == "classes" else " (other images' clean classes)")
            )
        for t in range(cfg.targets.per_image):
            rng = _rng(cfg.seed, im.name, t)
            # Distinct targets: redraw (same stream) a class this image already has.
            while True:
                if cfg.targets.pool == "classes":
                    c = int(rng.integers(0, num_classes - 1))
                    pair: tuple[int, str | None] = (c + (c >= clean[im.name]), None)
                else:
                    o = others[int(rng.integers(0, len(others)))]
                    pair = (clean[o], o)
                if all(pair[0] != q for q, _ in pairs):
                    break
            pairs.append(pair)
        out[im.name] = pairs
    return out


def case_id(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]


def build_cases(
    cfg: BenchConfig,
    images: list[SourceImage],
    clean: dict[str, int],
    num_classes: int,
    class_name: Any,
) -> list[CaseRow]:
    """The whole grid as a list (see :func:`iter_cases`); a case listed twice is refused."""
    rows = list(iter_cases(cfg, images, clean, num_classes, class_name))
    if len({r.id for r in rows}) != len(rows):
        raise UserInputError("attacks: the grid lists the same case twice (duplicate values?)")
    return rows


def iter_cases(
    cfg: BenchConfig,
    images: list[SourceImage],
    clean: dict[str, int],
    num_classes: int,
    class_name: Any,
) -> Iterator[CaseRow]:
    """The grid's cases one at a time, in a stable order: attack, threat, k, norm, ε, budget,
    goal, image, target, seed. Nothing holds the grid: a database takes them as they come (and
    refuses a repeated id). The targets are drawn first, so their errors come before any."""
    targets = draw_targets(cfg, images, clean, num_classes)
    return _cases(cfg, images, targets, class_name)


def _cases(
    cfg: BenchConfig,
    images: list[SourceImage],
    targets: dict[str, list[tuple[int, str | None]]],
    class_name: Any,
) -> Iterator[CaseRow]:
    digest = {im.name: im.digest for im in images}
    model = cfg.model.model_dump(mode="json")
    idx = itertools.count()
    for spec, params in (
        (sp, sp.case_params(cfg.model.name, d)) for sp in cfg.attacks for d in sp.defenses()
    ):
        seeds = spec.seeds if spec.seeds is not None else cfg.seeds
        ks = [(t, k) for t in spec.threats() for k in (spec.k if t != "ql" else [0])]
        for (threat, k), (norm, eps), budget, goal, im in itertools.product(
            ks, spec.balls(), spec.budget, spec.goal, images
        ):
            # An untargeted case has no target (-1) and no start image.
            pairs = targets[im.name] if goal == "targeted" else [(-1, None)]
            for (target, start), seed in itertools.product(pairs, seeds):
                fields = {
                    "attack": spec.name,
                    "params": params,
                    "threat": threat,
                    "k": k,
                    "eps": eps,
                    "budget": budget,
                    # L∞ targeted cases keep the ids they had before norms and goals existed.
                    **({} if norm == "linf" else {"norm": norm}),
                    **({} if goal == "targeted" else {"goal": goal}),
                    "image": im.name,
                    "image_digest": digest[im.name],
                    "target": target,
                    "start": start and digest[start],
                    "seed": seed,
                    "model": model,
                }
                yield CaseRow(
                    id=case_id(fields),
                    idx=next(idx),
                    attack=spec.name,
                    threat=threat,
                    k=k,
                    norm=norm,
                    eps=eps,
                    budget=budget,
                    image=im.name,
                    target_id=target,
                    target_name=None if target < 0 else class_name(target),
                    start_image=start,
                    seed=seed,
                    params=params,
                )
