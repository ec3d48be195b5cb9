"""The work behind ``POST /v1/images:annotate``, apart from the gateway's checks."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ImageLoadError
from ..models import Classifier
from ..targets.labels import DEFAULT_MAX_RESULTS, LabelIndex
from .decode import decode_base64, decode_image
from .errors import SERVICE, ApiError
from .gateway import KeyLedger
from .schema import (
    AnnotateImageResponse,
    BatchAnnotateImagesRequest,
    BatchAnnotateImagesResponse,
    EntityAnnotation,
    Status,
)

__all__ = ["Annotator"]

# A spent quota never refills while the server runs; a day is what Google's daily quotas say.
QUOTA_RETRY_AFTER_S = 86_400


@dataclass
class _Plan:
    """One entry of a call that is to be labelled."""

    index: int
    data: bytes
    max_results: int


class Annotator:
    """The endpoint's work: check the batch, bill it, decode, one forward pass, labels."""

    def __init__(
        self,
        model: Classifier,
        index: LabelIndex,
        ledger: KeyLedger,
        *,
        threshold: float,
        max_images: int,
    ) -> None:
        self.model = model
        self.index = index
        self.ledger = ledger
        self.threshold = threshold
        self.max_images = max_images
        self.size = model.input_shape[1]
        # Decoding is CPU-bound and a large image takes hundreds of MB while it is converted:
        # a few at a time bound both, whatever the threadpool's size.
        self._decode_slots = threading.BoundedSemaphore(min(4, os.cpu_count() or 1))
        # One forward pass at a time: it uses every core anyway, and a Classifier does not
        # promise to be thread-safe.
        self._model_lock = threading.Lock()

    def annotate(
        self, body: BatchAnnotateImagesRequest, key: str
    ) -> tuple[BatchAnnotateImagesResponse, int]:
        """The response and the number of images billed."""
        n = len(body.requests)
        if n == 0:
            raise ApiError(400, "No requests specified: 'requests' must hold at least one image.")
        if n > self.max_images:
            raise ApiError(400, f"Too many images in one call: {n} (at most {self.max_images}).")
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
        if plans and not self.ledger.reserve(key, len(plans)):
            raise ApiError(
                429,
                f"Quota exceeded for quota metric 'Images' and limit 'Images per API key' of "
                f"service '{SERVICE}': {len(plans)} more would pass {self.ledger.quota}.",
                reason="QUOTA_EXCEEDED",
                headers={"Retry-After": str(QUOTA_RETRY_AFTER_S)},
            )
        good: list[_Plan] = []
        images: list[Any] = []
        for p in plans:
            try:
                with self._decode_slots:
                    images.append(decode_image(p.data, self.size))
                good.append(p)
            except ImageLoadError:
                responses[p.index].error = Status(code=3, message="Bad image data.")
        self.ledger.refund(key, len(plans) - len(good))
        if good:
            try:
                with self._model_lock:
                    probs = self.model(np.stack(images))
            except BaseException:
                self.ledger.refund(key, len(good))
                raise
            found = self.index.annotate(
                probs, threshold=self.threshold, max_results=[p.max_results for p in good]
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
