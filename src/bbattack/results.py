"""Attack results: per-image records that survive JSON, a per-step trace, and file outputs."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, model_validator

__all__ = [
    "AttackResult",
    "ClassRef",
    "ImageResult",
    "StepRecord",
    "TopKEntry",
    "default_mode",
    "unattacked_success",
    "write_atomic",
]


class ClassRef(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: int
    name: str | None = None


class TopKEntry(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: int
    name: str | None = None
    score: float | None = None  # None where the view reveals no scores


class ImageResult(BaseModel):
    """What happened to one image. Success is judged on the saved 8-bit image."""

    model_config = ConfigDict(frozen=True)
    index: int
    success: bool
    queries: int
    queries_at_success: int | None
    queries_by_kind: dict[str, int]
    linf: float
    l2: float
    eps: float
    norm: str = "linf"  # the ball eps is measured in
    original: ClassRef | None
    target: ClassRef | None
    final_topk: list[TopKEntry]
    steps: int
    stop_reason: str
    wall_time_s: float
    seed: int
    lost_queries: int = 0  # charged (maybe billed) but never answered: a failed remote call
    # The label that met a targeted goal: the target, or one below it where ancestors count.
    matched: ClassRef | None = None

    @model_validator(mode="before")
    @classmethod
    def _already(cls, data: Any) -> Any:
        # A record written before ``already`` existed read as it is written now.
        if isinstance(data, dict) and unattacked_success(data):
            return {**data, "success": False, "stop_reason": "already", "queries_at_success": None}
        return data


def _class_id(ref: Any) -> int | None:
    value = ref.get("id") if isinstance(ref, dict) else getattr(ref, "id", None)
    return value if isinstance(value, int) else None


def unattacked_success(d: dict[str, Any]) -> bool:
    """Whether a result record (result.json, or an older bbattack's) claims a success that no
    attack made: the clean image was already of the target class, or nothing was perturbed.
    Such records are written ``success: false, stop_reason: "already"`` now."""
    if d.get("success") is not True:
        return False
    target = _class_id(d.get("target"))
    unmoved = d.get("linf") == 0 and d.get("l2") == 0
    return unmoved or (target is not None and target == _class_id(d.get("original")))


@dataclass(frozen=True)
class StepRecord:
    """One row of the per-step trace (one image, one outer iteration)."""

    image: int
    step: int
    queries: int
    loss: float | None
    target_prob: float | None
    target_rank: int | None
    eps: float
    lr: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class AttackResult:
    """Result of one attack run over a batch of images."""

    attack: str
    threat: dict[str, Any]
    config: dict[str, Any]
    images: list[ImageResult]
    x_adv: NDArray[np.float32]  # (N, C, H, W), on the 8-bit grid
    trace: list[StepRecord] = field(default_factory=list)
    surrogates: list[dict[str, Any]] = field(default_factory=list)  # name, family, weights

    @property
    def success(self) -> NDArray[np.bool_]:
        return np.array([r.success for r in self.images], dtype=bool)

    @property
    def success_rate(self) -> float:
        return float(self.success.mean()) if self.images else 0.0

    def image_json(self, i: int) -> dict[str, Any]:
        """One image's result merged with the run's config: the schema of result.json."""
        d = self.images[i].model_dump(mode="json")
        d.update({"attack": self.attack, "threat": self.threat, "config": self.config})
        if self.surrogates:
            d["surrogates"] = self.surrogates
        return d

    def to_json(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "threat": self.threat,
            "config": self.config,
            "success_rate": self.success_rate,
            **({"surrogates": self.surrogates} if self.surrogates else {}),
            "images": [r.model_dump(mode="json") for r in self.images],
        }

    def trace_jsonl(self, image: int | None = None) -> str:
        rows = [t.to_dict() for t in self.trace if image is None or t.image == image]
        return "".join(json.dumps(r) + "\n" for r in rows)


def default_mode() -> int:
    """Permissions a plain open() would give (mkstemp makes files private)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a file."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, default_mode())
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
