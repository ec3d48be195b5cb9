"""One query as the journal stores it: the digest of its exact input, and the observation the
view returned for it, as bytes. Observations are always rebuilt from these rows, so a run that
was paid for, resumed or replayed hands the attack exactly the same arrays."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .views import (
    LabelsObservation,
    Observation,
    ScoresObservation,
    TopKObservation,
    View,
    frozen_array,
)

__all__ = ["Answer", "assemble", "chain_next", "digests", "split"]


@dataclass(frozen=True)
class Answer:
    """One row of an observation: label ids (int64) and scores (float32), as bytes; None for
    what the view does not reveal. Padding (-1 labels) is not stored."""

    labels: bytes | None
    scores: bytes | None


def digests(x: NDArray[np.float32], eight_bit: bool = False) -> list[str]:
    """``u8:<sha256>`` of the 8-bit image where a row lies on the 8-bit grid (what success
    checks and most attacks send) or where the target only ever sees 8 bits (``eight_bit``: an
    API that receives PNGs), else ``f32:<sha256>`` of the float32 row. Both cover the shape:
    the digest names the exact input the target received."""
    n = len(x)
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(n, -1)
    if eight_bit:  # the rounding of images.to_uint8, which the PNG encoder uses: float64
        q = np.clip(np.rint(flat.astype(np.float64) * 255.0), 0.0, 255.0)
        on_grid = np.ones(n, bool)
    else:  # float32 k/255 equals float32(k/255.0) for every k: one float32 pass suffices
        q = np.rint(flat * np.float32(255.0))
        on_grid = (q / np.float32(255.0) == flat).all(axis=1)
    shape = "x".join(str(s) for s in x.shape[1:]).encode()
    out = []
    for i in range(n):
        if on_grid[i]:
            data = q[i].astype(np.uint8).tobytes()
            out.append("u8:" + hashlib.sha256(shape + b"|" + data).hexdigest())
        else:
            data = flat[i].astype("<f4").tobytes()
            out.append("f32:" + hashlib.sha256(shape + b"|" + data).hexdigest())
    return out


def split(obs: Observation) -> list[Answer]:
    """One Answer per row of ``obs``."""
    if isinstance(obs, ScoresObservation):
        return [Answer(None, p.astype("<f4").tobytes()) for p in obs.probs]
    out = []
    for i in range(len(obs)):
        lab = obs.labels[i]
        keep = lab >= 0
        scores = None
        if isinstance(obs, TopKObservation):
            scores = obs.scores[i][keep].astype("<f4").tobytes()
        out.append(Answer(lab[keep].astype("<i8").tobytes(), scores))
    return out


def assemble(view: View, rows: list[Answer]) -> Observation:
    """The observation of ``rows`` under ``view``; ranked rows are padded to the longest."""
    if view.kind == "scores":
        probs = np.stack([np.frombuffer(r.scores or b"", "<f4") for r in rows])
        return ScoresObservation(frozen_array(probs.astype(np.float32)))
    labels = [np.frombuffer(r.labels or b"", "<i8") for r in rows]
    width = max([1, *(len(v) for v in labels)])
    lab = np.full((len(rows), width), -1, np.int64)
    for i, v in enumerate(labels):
        lab[i, : len(v)] = v
    if view.kind == "labels":
        return LabelsObservation(frozen_array(lab))
    sc = np.full((len(rows), width), np.nan, np.float32)
    for i, r in enumerate(rows):
        s = np.frombuffer(r.scores or b"", "<f4")
        sc[i, : len(s)] = s
    return TopKObservation(frozen_array(lab), frozen_array(sc))


def chain_next(
    prev: str,
    seq: int,
    example: int,
    kind: str,
    digest: str,
    status: str,
    answer: Answer | None,
    error: str | None,
) -> str:
    """The journal's hash chain: each row's link covers the previous link and everything the
    row says, so an edited, dropped or reordered row breaks every link after it."""
    h = hashlib.sha256(prev.encode())
    h.update(f"|{seq}|{example}|{kind}|{digest}|{status}|{error or ''}|".encode())
    if answer is not None:
        lab, sc = answer.labels or b"", answer.scores or b""
        h.update(f"L{len(lab)}S{len(sc)}|".encode() + lab + sc)
    return h.hexdigest()
