"""What a finished bench case stores: an :class:`~bbattack.results.ImageResult` and what the
bench adds (the case, the worker, the 8-bit image, its trace, its provenance)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..results import ImageResult

__all__ = ["CaseOutcome"]


@dataclass(frozen=True)
class CaseOutcome:
    """What a finished case stores (plain data, sent back from worker processes)."""

    case_id: str
    success: bool
    queries: int
    queries_at_success: int | None
    queries_by_kind: dict[str, int]
    linf: float
    l2: float
    final_top1: int | None
    final_topk: list[dict[str, Any]]
    stop_reason: str
    steps: int
    wall_time_s: float
    worker: str
    adv_png: bytes
    trace: list[dict[str, Any]]
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_image(
        cls,
        case_id: str,
        r: ImageResult,
        *,
        worker: str,
        adv_png: bytes,
        trace: list[dict[str, Any]],
        provenance: dict[str, Any],
    ) -> CaseOutcome:
        """A case's outcome from its image's result: the fields are the result's own."""
        return cls(
            case_id=case_id,
            success=r.success,
            queries=r.queries,
            queries_at_success=r.queries_at_success,
            queries_by_kind=r.queries_by_kind,
            linf=r.linf,
            l2=r.l2,
            final_top1=r.final_topk[0].id if r.final_topk else None,
            final_topk=[k.model_dump(mode="json") for k in r.final_topk],
            stop_reason=r.stop_reason,
            steps=r.steps,
            wall_time_s=r.wall_time_s,
            worker=worker,
            adv_png=adv_png,
            trace=trace,
            provenance=provenance,
        )
