"""Checkpoints of a running attack, taken between steps, and the resume that continues one.

A checkpoint holds the whole attack state as plain data (arrays, schedules, momentum, every
image's RNG state as bytes, elapsed time rather than a clock origin), the oracle's counters,
the trace so far, the journal position and the run's fingerprint (attack, attack version,
config, inputs, target). It is one ``ckpt-<step>.npz`` file: ``.npy`` arrays, a JSON tree and a
manifest of SHA-256 digests, written to a temporary file, fsynced and renamed into place. The
previous checkpoint is kept until the new one is complete; a damaged one is reported and the
one before it is used. A checkpoint of another fingerprint is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from .._version import __version__
from ..errors import BBAttackError, UserInputError
from ..results import StepRecord
from ._code_hash import code_digest
from ._plain import PlainDataError, from_plain, to_plain, trace_columns, trace_records
from .state import AttackState

if TYPE_CHECKING:
    from ..oracle import Oracle

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "CheckpointError",
    "Checkpointer",
    "Every",
    "Interrupted",
    "attack_version",
    "digest_of",
    "restore_state",
    "run_fingerprint",
]

CHECKPOINT_FORMAT = 1
_NAME = re.compile(r"^ckpt-(\d{8,})\.npz$")


class CheckpointError(UserInputError):
    """A checkpoint that cannot be used: another config, model or attack version (one line)."""


class Interrupted(BBAttackError):  # noqa: N818 - reads as a state, like BudgetExhausted
    """The run stopped on request (Ctrl-C) after writing a checkpoint at ``step``."""

    def __init__(self, step: int) -> None:
        super().__init__(f"interrupted after step {step}; a checkpoint was written")
        self.step = step


@dataclass(frozen=True)
class Every:
    """How often to checkpoint: every ``steps`` steps, or every ``seconds`` seconds (neither
    given: every 60 s)."""

    steps: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.steps is None and self.seconds is None:
            object.__setattr__(self, "seconds", 60.0)

    @classmethod
    def parse(cls, text: str) -> Every:
        """``50`` (steps), ``30s``, ``5m``."""
        t = text.strip().lower()
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|m|min)?", t)
        if m is None or float(m.group(1)) <= 0:
            raise UserInputError(
                f"--checkpoint-every: expected steps (50) or a time (30s, 5m), got {text!r}"
            )
        if m.group(2) is None:
            if "." in m.group(1):
                raise UserInputError(f"--checkpoint-every: a step count is whole, got {text!r}")
            return cls(steps=int(m.group(1)))
        scale = 1.0 if m.group(2) == "s" else 60.0
        return cls(seconds=float(m.group(1)) * scale)

    def describe(self) -> str:
        return f"{self.steps} steps" if self.steps is not None else f"{self.seconds:g}s"


@dataclass
class Checkpoint:
    """What a checkpoint file holds, decoded."""

    path: Path
    step: int
    elapsed_s: float
    fingerprint: dict[str, str]
    state: dict[str, Any]
    oracle: dict[str, Any]
    trace: list[StepRecord]
    annex: dict[str, Any]


@cache
def attack_version(module: str | None = None) -> str:
    """The bbattack version and a hash of an attack's code: ``module`` (the attack's module)
    and every bbattack module it imports. A checkpoint made by other code would resume into
    different steps, so it is refused; another attack's change leaves it valid. Without
    ``module``: every attack module's code (what a result's provenance records)."""
    if module is not None:
        return f"{__version__}+{code_digest(module)}"
    h = hashlib.sha256(__version__.encode())
    for p in sorted(Path(__file__).parent.rglob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"


def digest_of(*parts: Any) -> str:
    """A short SHA-256 of arrays (their bytes, dtype and shape) and JSON-able values."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(f"{p.dtype.str}{p.shape}".encode())
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


@dataclass
class Checkpointer:
    """Writes checkpoints of one run into ``directory`` and finds the latest good one.

    ``every``: the policy; ``fingerprint``: what else must match on resume (the CLI adds the
    command's config); ``annex``: more plain data to save (the CLI's curve), handed to
    ``on_load`` with the checkpoint a resume starts from; ``warn`` hears of damaged ones.
    Set ``stop_requested`` (a signal handler does) and the run writes a checkpoint after its
    current step and raises :class:`Interrupted`.
    """

    directory: Path
    every: Every = field(default_factory=Every)
    fingerprint: dict[str, str] = field(default_factory=dict)
    annex: Callable[[], dict[str, Any]] | None = None
    on_load: Callable[[Checkpoint], None] | None = None
    warn: Callable[[str], None] | None = None
    keep: int = 2
    stop_requested: bool = False
    warnings: list[str] = field(default_factory=list)
    saved: int = 0
    _last_step: int = field(default=-1, init=False, repr=False)
    _last_time: float = field(default_factory=time.monotonic, init=False, repr=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)

    # -- writing

    def step_done(
        self, step: int, state: AttackState, oracle: Oracle, trace: list[StepRecord]
    ) -> None:
        """After a step (or the init, step 0): save if due or asked to stop; then stop."""
        due = (self.every.steps is not None and step > 0 and step % self.every.steps == 0) or (
            self.every.seconds is not None
            and time.monotonic() - self._last_time >= self.every.seconds
        )
        if due or self.stop_requested:
            self.save(step, state, oracle, trace)
        if self.stop_requested:
            raise Interrupted(step)

    def save(
        self, step: int, state: AttackState, oracle: Oracle, trace: list[StepRecord]
    ) -> Path | None:
        """Write the checkpoint of ``step`` (once), then drop all but the newest ``keep``."""
        if step == self._last_step:
            return None
        body = {
            "state": _state_fields(state),
            "oracle": oracle.snapshot(),
            "trace": trace_columns(trace),
            "annex": self.annex() if self.annex is not None else {},
        }
        tree, arrays = to_plain(body)
        meta = {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "elapsed_s": time.perf_counter() - float(state.ctx.t0),
            "fingerprint": self.fingerprint,
            "tree": tree,
        }
        path = self.directory / f"ckpt-{step:08d}.npz"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _write(path, meta, arrays)
        except OSError as e:
            # write() and fsync() name no file: say which checkpoint could not be written.
            # The previous checkpoint stays whole; the half-written one is gone.
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        self._last_step, self._last_time = step, time.monotonic()
        self.saved += 1
        for old in self.files()[self.keep :]:
            old.unlink(missing_ok=True)
        return path

    # -- reading

    def files(self) -> list[Path]:
        """Checkpoint files, newest first."""
        if not self.directory.is_dir():
            return []
        found = [
            (int(m.group(1)), p) for p in self.directory.iterdir() if (m := _NAME.match(p.name))
        ]
        return [p for _, p in sorted(found, reverse=True)]

    def bind(self, fingerprint: dict[str, str]) -> None:
        """The run's own fingerprint (the attack adds it): saved, and checked on load."""
        self.fingerprint = {**self.fingerprint, **fingerprint}

    def load(self) -> Checkpoint | None:
        """The newest checkpoint that reads back whole (damaged ones are noted in
        ``warnings`` and skipped); None if there is none. Refuses one of another run."""
        want = self.fingerprint
        for path in self.files():
            try:
                ck = _read(path)
            except (CheckpointError, PlainDataError) as e:
                self.warnings.append(f"checkpoint {path} is damaged ({e}); using the one before")
                if self.warn is not None:
                    self.warn(self.warnings[-1])
                continue
            for key in sorted(set(want) | set(ck.fingerprint)):
                if ck.fingerprint.get(key) != want.get(key):
                    raise CheckpointError(
                        f"checkpoint {path} was made with another {key} "
                        f"({ck.fingerprint.get(key)}; this run: {want.get(key)}): not resumed"
                    )
            self._last_step = ck.step
            if self.on_load is not None:
                self.on_load(ck)
            return ck
        return None


def run_fingerprint(
    attack: Any,
    oracle: Oracle,
    x: NDArray[np.float32],
    target: NDArray[np.int64],
    seeds: NDArray[np.int64],
    start: NDArray[np.float32] | None,
    success: str,
    surrogates: Any,
) -> dict[str, str]:
    """What a checkpoint must have been made with to resume this run."""
    return {
        "attack": str(attack.name),
        "attack version": attack_version(type(attack).__module__),
        "config": digest_of(attack.config.model_dump(mode="json")),
        "inputs": digest_of(
            x,
            target,
            seeds,
            "no start" if start is None else start,
            success,
            oracle.view.describe(),
            [oracle.max_queries, oracle.max_total_queries],
            [s.weights_id or s.name for s in surrogates],
        ),
        "target": oracle.target_identity,
    }


def restore_state(state: AttackState, ck: Checkpoint) -> None:
    """Fill a fresh state (same images, targets and seeds) from a checkpoint."""
    saved = ck.state
    for f in fields(state):
        if f.name in ("goal", "ball", "ctx"):
            continue
        new, old = saved.get(f.name), getattr(state, f.name)
        if isinstance(old, np.ndarray) and (
            not isinstance(new, np.ndarray) or new.shape != old.shape or new.dtype != old.dtype
        ):
            raise CheckpointError(f"checkpoint {ck.path.name}: state.{f.name} does not fit")
        setattr(state, f.name, new)
    state.ctx.t0 = time.perf_counter() - ck.elapsed_s


def _state_fields(state: AttackState) -> dict[str, Any]:
    out: dict[str, Any] = {
        f.name: getattr(state, f.name)
        for f in fields(state)
        if f.name not in ("goal", "ball", "ctx")
    }
    return out


# -- the file


def _write(path: Path, meta: dict[str, Any], arrays: list[NDArray[Any]]) -> None:
    members: dict[str, bytes] = {}
    for i, a in enumerate(arrays):
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
        members[f"a{i}.npy"] = buf.getvalue()
    members["checkpoint.json"] = json.dumps(meta, allow_nan=False).encode()
    manifest = {k: hashlib.sha256(v).hexdigest() for k, v in members.items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
                for name, data in members.items():
                    z.writestr(name, data)
                z.writestr("manifest.json", json.dumps(manifest, sort_keys=True))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)  # the rename itself survives a power cut
    finally:
        os.close(fd)


def _read(path: Path) -> Checkpoint:
    try:
        with zipfile.ZipFile(path) as z:
            manifest = json.loads(z.read("manifest.json"))
            names = set(z.namelist()) - {"manifest.json"}
            if names != set(manifest):
                raise CheckpointError("its members do not match its manifest")
            data = {n: z.read(n) for n in names}
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, EOFError) as e:
        raise CheckpointError(f"unreadable: {type(e).__name__}") from None
    for n, digest in manifest.items():
        if hashlib.sha256(data[n]).hexdigest() != digest:
            raise CheckpointError(f"{n} does not match its digest")
    meta = json.loads(data["checkpoint.json"])
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"format {meta.get('format')}, this bbattack reads {CHECKPOINT_FORMAT}"
        )
    n_arrays = len(names) - 1
    arrays = [
        np.lib.format.read_array(io.BytesIO(data[f"a{i}.npy"]), allow_pickle=False)
        for i in range(n_arrays)
    ]
    body = from_plain(meta["tree"], arrays)
    return Checkpoint(
        path=path,
        step=int(meta["step"]),
        elapsed_s=float(meta["elapsed_s"]),
        fingerprint={str(k): str(v) for k, v in meta["fingerprint"].items()},
        state=body["state"],
        oracle=body["oracle"],
        trace=trace_records(body["trace"]),
        annex=body["annex"],
    )
