"""The classifier interface behind the oracle: float32 images (N, C, H, W) in [0, 1] to class
probabilities (N, K), in chunks; and a classifier from any Python callable."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from .classes import ClassNames
from .errors import UserInputError

__all__ = ["CallableClassifier", "Classifier", "FloatArray", "OutputKind", "softmax"]

FloatArray = NDArray[np.float32]
OutputKind = Literal["logits", "probs"]


def softmax(z: NDArray[np.floating]) -> FloatArray:
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: FloatArray = (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
    return out


class Classifier(ABC):
    """Maps (N, C, H, W) float32 images in [0, 1] to (N, K) probabilities, in chunks."""

    name: str = "classifier"
    backend: str = "python"
    family: str | None = None  # architecture family, where known (surrogate reports)
    # A model loaded from a spec (bbattack.targets.spec): its canonical spec string and its
    # resolved preprocessing, which provenance records. None for the built-in models.
    spec: str | None = None
    preprocessing: dict[str, Any] | None = None
    _weights_id: str | None = None

    @property
    def weights_id(self) -> str | None:
        """A hash of the weights alone, where known: a surrogate with the target's weights is
        refused by it."""
        return self._weights_id

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        *,
        output: OutputKind = "logits",
        batch_size: int = 64,
        class_names: ClassNames | None = None,
    ) -> None:
        if batch_size < 1:
            raise UserInputError(f"batch_size must be >= 1, got {batch_size}")
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.output = output
        self.batch_size = batch_size
        self.class_names = class_names

    @abstractmethod
    def _forward(self, x: FloatArray) -> NDArray[np.floating]:
        """Raw model outputs (logits or probabilities) for one chunk."""

    def __call__(self, x: NDArray[np.floating]) -> FloatArray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"expected images of shape (N, {self.input_shape}), got {x.shape}")
        if len(x) == 0:
            return np.zeros((0, self.num_classes), np.float32)
        # Chunks bound memory; results do not depend on the chunking.
        outs = [
            self._forward(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)
        ]
        raw = np.concatenate(outs, axis=0)
        if self.output == "logits":
            return softmax(raw)
        return np.asarray(raw, dtype=np.float32)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, backend={self.backend!r}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes})"
        )


class CallableClassifier(Classifier):
    """Wraps any Python callable ``fn(x: ndarray (N,C,H,W) float32) -> logits or probabilities``."""

    backend = "callable"

    def __init__(
        self,
        fn: Callable[[FloatArray], NDArray[np.floating]],
        input_shape: tuple[int, int, int],
        num_classes: int,
        *,
        output: OutputKind = "logits",
        batch_size: int = 64,
        class_names: ClassNames | None = None,
        name: str = "callable",
    ) -> None:
        super().__init__(
            input_shape, num_classes, output=output, batch_size=batch_size, class_names=class_names
        )
        self.fn = fn
        self.name = name

    def _forward(self, x: FloatArray) -> NDArray[np.floating]:
        return np.asarray(self.fn(x))
