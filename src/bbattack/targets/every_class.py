"""A label API that lists every one of its classes with a score in each answer (Hugging
Face's ``top_k`` at least its number of classes), read as a score vector: the QL threat
model over HTTP.

The vector has ``classes`` slots (``--max-results``). Each label string takes the next free
slot the first time it is named (the journal keeps the ids, as for any label target), and a
class's score is the API's, never filled in: a label named twice in one answer (two classes
under one name, as ImageNet's two "missile" classes) is one slot holding the sum, and a slot
no label ever named stays 0. An answer whose scores do not sum to 1 left a class out (the
API has more classes than it was asked to list), and a label past the last slot means the
same: either stops the run (RemoteError) rather than hand the attack a made-up score.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ..errors import UserInputError
from ..oracle import Observation, View
from ..remote.errors import RemoteError
from . import EDGE, LabelSource, LabelTarget, Vocabulary

__all__ = ["SUM_TOLERANCE", "EveryClassTarget"]

FloatArray = NDArray[np.float32]
# How far an answer's softmax scores may sum from 1 (the API's own rounding) and still be
# taken as every class.
SUM_TOLERANCE = 1e-3


class EveryClassTarget(LabelTarget):
    """:class:`LabelTarget` whose source lists all of its ``classes`` classes with their
    (softmax) scores in every answer: served to the ``Scores`` view as well as the label
    views."""

    def __init__(
        self,
        source: LabelSource,
        classes: int,
        vocabulary: Vocabulary | None = None,
        name: str = "label-api",
    ) -> None:
        if classes < 2:
            raise UserInputError(f"a score vector needs at least 2 classes, got {classes}")
        super().__init__(source, vocabulary, name)
        self.num_classes = classes

    def refuses(self, view: View) -> str | None:
        return None if view.kind == "scores" else super().refuses(view)

    def observe(self, x: FloatArray, view: View) -> Observation:
        if view.kind != "scores":
            return super().observe(x, view)
        answers = self.source.annotate(x) if len(x) else []
        probs = np.zeros((len(answers), self.num_classes), np.float32)
        for i, answer in enumerate(answers):
            for label, score in answer:
                c = self.class_names.resolve(label.replace(EDGE, ""))
                if c >= self.num_classes:
                    raise _incomplete(
                        f"the API named more than {self.num_classes} distinct labels (the "
                        f"last: {label!r}): it has more classes than --max-results "
                        f"{self.num_classes}, or --target names none of them",
                        len(answers),
                    )
                probs[i, c] += score
            total = float(sum(s for _, s in answer))
            if abs(total - 1.0) > SUM_TOLERANCE:
                raise _incomplete(
                    f"the API listed {len(answer)} labels whose scores sum to {total:.4f}, not "
                    f"1: it left classes out (it has more than --max-results "
                    f"{self.num_classes}: give its number of classes), or its scores are not "
                    "softmax probabilities",
                    len(answers),
                )
        return view.observe(probs)


def _incomplete(message: str, answered: int) -> RemoteError:
    """The error that stops a run whose answers are not every class's scores; the images of
    the call were answered, so billed (the journal counts them as lost_billed)."""
    error = RemoteError(message)
    error.billed_rows = tuple(range(answered))
    return error
