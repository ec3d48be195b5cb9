"""The work behind ``POST /v1/images:annotate`` (the ``gcv`` schema), apart from the gateway's
checks: validate the batch, hand its images to the :class:`~.core.Labeller`, build the labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..targets.labels import DEFAULT_MAX_RESULTS, LabelIndex
from .core import Labeller
from .decode import decode_base64
from .errors import ApiError
from .schema import (
    AnnotateImageResponse,
    BatchAnnotateImagesRequest,
    BatchAnnotateImagesResponse,
    EntityAnnotation,
    Status,
)

__all__ = ["Annotator"]


@dataclass
class _Plan:
    """One entry of a call that is to be labelled."""

    index: int
    data: bytes
    max_results: int


class Annotator:
    """The endpoint's work: check the batch, bill it, decode, one forward pass, labels."""

    def __init__(
        self, labeller: Labeller, index: LabelIndex, *, threshold: float, max_images: int
    ) -> None:
        self.labeller = labeller
        self.index = index
        self.threshold = threshold
        self.max_images = max_images

    def annotate(
        self, body: BatchAnnotateImagesRequest, key: str
    ) -> tuple[BatchAnnotateImagesResponse, int]:
        """The response and the number of images billed."""
        n = len(body.requests)
        if n == 0:
            raise ApiError(400, "No requests specified: 'requests' must hold at least one image.")
        if n > self.max_images:
            raise ApiError(
                400,
                f"Too many images in one call: {n} (at most {self.max_images}).",
                kind="too_many_images",
            )
        responses: list[AnnotateImageResponse] = [AnnotateImageResponse() for _ in range(n)]
        plans: list[_Plan] = []
        # Every field is checked before anything is billed: bad base64 fails the whole call.
        for i, req in enumerate(body.requests):
            content = req.image.content if req.image is not None else None
            data = None
            if content is not None:
                try:
                    data = decode_base64(content)
                except ValueError:
                    raise ApiError(
                        400,
                        f"Invalid value at 'requests[{i}].image.content' (TYPE_BYTES), "
                        "Base64 decoding failed.",
                    ) from None
            labels = [f for f in req.features if f.type == "LABEL_DETECTION"]
            if not req.features:
                responses[i].error = Status(code=3, message="No feature specified.")
            elif not labels:
                kinds = ", ".join(sorted({f.type for f in req.features}))
                responses[i].error = Status(
                    code=12, message=f"Not supported here: {kinds}; only LABEL_DETECTION is."
                )
            elif data is None:
                has_source = req.image is not None and req.image.source is not None
                responses[i].error = Status(
                    code=3,
                    message="image.source is not supported here: send the bytes in image.content."
                    if has_source
                    else "No image provided.",
                )
            else:
                limit = max(f.max_results or DEFAULT_MAX_RESULTS for f in labels)
                plans.append(_Plan(i, data, limit))
        outcomes = self.labeller.label(key, [p.data for p in plans])
        good: list[_Plan] = []
        rows = []
        for p, out in zip(plans, outcomes, strict=True):
            if out.probs is None:
                responses[p.index].error = Status(code=3, message="Bad image data.")
            else:
                good.append(p)
                rows.append(out.probs)
        if good:
            found = self.index.annotate(
                np.stack(rows), threshold=self.threshold, max_results=[p.max_results for p in good]
            )
            for p, labs in zip(good, found, strict=True):
                if labs:  # proto3 JSON leaves an empty list out, as Google does
                    responses[p.index].label_annotations = [
                        EntityAnnotation(
                            mid=a.mid,
                            description=a.description,
                            score=a.score,
                            topicality=a.topicality,
                        )
                        for a in labs
                    ]
        return BatchAnnotateImagesResponse(responses=responses), len(good)
