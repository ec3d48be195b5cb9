"""Open a grid's database: validate the config, say how big the grid is (and let the caller
refuse it), then create the database for a new grid (atomically, its cases streamed in as they
are built) or check that an existing one holds this same grid. Nothing is written on bad input."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..errors import UserInputError
from ..provenance import packages
from .config import BenchConfig, load_config
from .db import BenchDB
from .grid import collect_images, iter_cases, open_model, select_images
from .machine import describe
from .size import GridSize, grid_size

__all__ = ["Confirm", "prepare"]

# Told the grid's size before anything is built or run; raises (UserInputError) to refuse it.
Confirm = Callable[[GridSize], None]


def prepare(
    config_path: Path, db_path: Path, only: Sequence[str] = (), confirm: Confirm | None = None
) -> BenchDB:
    """Validate the config, then open the database: create it for a new grid (atomically),
    or check that an existing one holds this same grid. Nothing is written on bad input."""
    cfg, text = load_config(config_path)
    grid = {a.name for a in cfg.attacks}
    if unknown := sorted(set(only) - grid):
        has = ", ".join(sorted(grid))
        raise UserInputError(f"--only: {', '.join(unknown)} not in this grid; it has {has}")
    if db_path.is_dir():
        raise UserInputError(f"--db {db_path}: is a directory")
    if db_path.exists():
        with BenchDB.open(db_path, create=False, read_only=True) as ro:  # refuse untouched
            meta = ro.meta()
        if meta.get("config_hash") != cfg.digest():
            raise UserInputError(
                f"{db_path} holds another grid ({meta.get('name')!r}, config hash "
                f"{meta.get('config_hash')}; this config is {cfg.digest()}): use another --db"
            )
        if confirm is not None:
            confirm(grid_size(cfg))
        return _locked(BenchDB.open(db_path, create=False))
    if confirm is not None:
        confirm(grid_size(cfg))
    _create(cfg, text, config_path, db_path)
    return _locked(BenchDB.open(db_path, create=False))


def _create(cfg: BenchConfig, text: str, config_path: Path, db_path: Path) -> None:
    model = open_model(cfg.model)
    images = collect_images(cfg, config_path.parent, model.input_shape[1:])
    probs = model(np.stack([im.array() for im in images]))
    top = dict(zip([im.name for im in images], probs.argmax(axis=1).tolist(), strict=True))
    images, qualified = select_images(cfg, images, probs)
    if not images:
        raise UserInputError("images: no photo qualifies for this target model")
    clean = {im.name: top[im.name] for im in images}
    names = model.class_names

    def class_name(c: int) -> str | None:
        return names.name(c) if names is not None else None

    cases = iter_cases(cfg, images, clean, model.num_classes, class_name)
    meta = {
        "name": cfg.name,
        "config_toml": text,
        "config_json": json.dumps(cfg.model_dump(mode="json")),
        "config_hash": cfg.digest(),
        "versions": json.dumps(packages()),
        "model": cfg.model.describe(),
        "backend": getattr(model, "backend", type(model).__name__),
        "machine": describe(),
        "images_qualified": json.dumps(qualified),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    rows = [
        (im.name, im.path, im.digest, clean[im.name], class_name(clean[im.name]), im.png)
        for im in images
    ]
    # Built under a temporary name, then linked into place (which fails if the name exists,
    # unlike a rename): a crash leaves no database behind, and of two runs creating the same
    # --db at once, one wins and the other stops.
    tmp = db_path.with_name(f".{db_path.name}.{os.getpid()}.tmp")
    sides = [tmp.with_name(tmp.name + side) for side in ("-wal", "-shm", "-journal")]
    try:
        for leftover in (tmp, *sides):
            leftover.unlink(missing_ok=True)
        db = BenchDB.open(tmp, create=True)
        try:
            db.initialise(meta, rows, cases)
            db.finish()
        except sqlite3.IntegrityError:  # the cases stream in: a repeat shows as a taken id
            raise UserInputError(
                "attacks: the grid lists the same case twice (duplicate values?)"
            ) from None
        finally:
            db.close()
        os.link(tmp, db_path)
    except FileExistsError:
        raise UserInputError(
            f"--db {db_path}: another `bbattack bench` created it meanwhile"
        ) from None
    except OSError as e:
        raise UserInputError(f"--db {db_path}: cannot write ({e.strerror})") from None
    finally:
        for f in (tmp, *sides):
            f.unlink(missing_ok=True)


def _locked(db: BenchDB) -> BenchDB:
    """One `bbattack bench` per database at a time (two would redo the same pending cases).
    flock on the file itself: independent of SQLite's own POSIX locks, released with the
    process even on SIGKILL."""
    import fcntl

    fd = os.open(db.path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        db.close()
        raise UserInputError(
            f"another `bbattack bench` is running on {db.path}; wait for it or stop it"
        ) from None
    db.lock_fd = fd
    return db
