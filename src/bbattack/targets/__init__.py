"""Targets that answer in label strings (Cloud-Vision-style APIs) instead of class scores.

Such an API returns, per image, a varying number of free-text labels with scores ("Skiing",
"Piste", "Dog"). A :class:`LabelTarget` maps every label string it meets to an integer id in a
growing :class:`Vocabulary`, so the oracle hands attacks the same ranked observations as for a
local model: ``TopKObservation`` (labels and scores) or ``LabelsObservation`` (labels only),
padded with -1 labels (and NaN scores) where an image got fewer labels than another.

Labels with a hierarchy: where the source names a label's ancestors (Rekognition's
``Parents``: ``HttpLabelTarget.ancestors``), the vocabulary notes them, and a target built
with ``ancestors=True`` lets a label count for each of its ancestors when success is decided
(target "Animal" is met by "Dog"; target "Dog" is never met by "Animal").
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from ..errors import ThreatModelError, UserInputError
from ..oracle import LabelsObservation, Observation, TopKObservation, View, frozen_array

__all__ = ["LabelSource", "LabelTarget", "Vocabulary"]

FloatArray = NDArray[np.float32]
# Ids are unbounded; this only bounds what a target id may be.
VOCAB_CAPACITY = 2**31 - 1
# An ancestry edge is kept as a vocabulary name, "\x01Dog\x01Animal", so the query journal
# (which keeps the vocabulary's names) keeps the hierarchy for a resume or a replay.
EDGE = "\x01"


class LabelSource(Protocol):
    """Anything that labels images: an HTTP API client, or a local stand-in in tests."""

    input_shape: tuple[int, int, int]

    def annotate(self, x: FloatArray) -> list[list[tuple[str, float]]]:
        """Per image, (label, score) pairs, best first."""
        ...


class Vocabulary:
    """Label strings ↔ ids, case-insensitive, growing as new labels appear.

    Has the ``name``/``resolve`` interface of :class:`bbattack.ClassNames`, so results and the
    CLI print label strings the same way as class names.
    """

    grows = True  # ids are given as labels appear: the journal keeps them (oracle.journal)

    def __init__(self, labels: list[str] | None = None, *, count_ancestors: bool = False) -> None:
        self._names: list[str] = []
        self._ids: dict[str, int] = {}
        self._up: dict[int, set[int]] = {}  # label id -> the ids of its named ancestors
        self._lock = threading.Lock()
        # Whether a label meets a target that is one of its ancestors (attacks.goals.Goal).
        self.count_ancestors = count_ancestors
        for label in labels or []:
            self.resolve(label)

    def __len__(self) -> int:
        return len(self._names)

    def name(self, label_id: int) -> str:
        return self._names[label_id]

    def resolve(self, key: str | int) -> int:
        """The id of a label string (added if new). Integers are not accepted: a remote API
        has no class ids."""
        if not isinstance(key, str) or not key.strip():
            raise UserInputError(f"a label target needs a label string, got {key!r}")
        if key.startswith(EDGE):
            return self._edge(key)
        norm = " ".join(key.split()).casefold()
        with self._lock:
            if norm not in self._ids:
                self._ids[norm] = len(self._names)
                self._names.append(" ".join(key.split()))
            return self._ids[norm]

    def _edge(self, key: str) -> int:
        parts = key.split(EDGE)
        if len(parts) != 3 or not parts[1].strip() or not parts[2].strip():
            raise UserInputError(f"not a label: {key!r}")
        child, parent = self.resolve(parts[1]), self.resolve(parts[2])
        name = f"{EDGE}{self.name(child)}{EDGE}{self.name(parent)}"
        norm = name.casefold()
        with self._lock:
            if norm not in self._ids:
                self._ids[norm] = len(self._names)
                self._names.append(name)
            self._up.setdefault(child, set()).add(parent)
            return self._ids[norm]

    def add_ancestor(self, label: str, ancestor: str) -> None:
        """Note that ``ancestor`` is above ``label`` (both added if new)."""
        if label.strip() and ancestor.strip():
            self.resolve(f"{EDGE}{label}{EDGE}{ancestor}")

    def ancestors(self, label_id: int) -> frozenset[int]:
        """Every ancestor of a label the answers named, transitively."""
        seen: set[int] = set()
        todo = deque([label_id])
        with self._lock:
            while todo:
                for a in self._up.get(todo.popleft(), ()):
                    if a not in seen:
                        seen.add(a)
                        todo.append(a)
        return frozenset(seen)

    def under(self, labels: NDArray[np.int64], targets: NDArray[np.int64]) -> NDArray[np.bool_]:
        """(N, K) label ids, (N,) target ids: whether each label is its row's target or below
        it (the target is one of its ancestors)."""
        labels, targets = np.asarray(labels, np.int64), np.asarray(targets, np.int64)
        out: NDArray[np.bool_] = labels == targets[:, None]
        for i, j in zip(*np.nonzero(~out & (labels >= 0)), strict=True):  # k labels a row
            out[i, j] = int(targets[i]) in self.ancestors(int(labels[i, j]))
        return out


class LabelTarget:
    """Puts a :class:`LabelSource` behind the oracle (the oracle counts and budgets queries).
    ``ancestors``: a label meets a target that is one of its ancestors, as the source names
    them (a source with an ``ancestors(label)`` method, such as Rekognition's client)."""

    backend = "labels"
    output = "labels"

    def __init__(
        self,
        source: LabelSource,
        vocabulary: Vocabulary | None = None,
        name: str = "label-api",
        *,
        ancestors: bool = False,
    ) -> None:
        self.source = source
        self.class_names = vocabulary or Vocabulary()
        if ancestors:
            self.class_names.count_ancestors = True
        self.input_shape = source.input_shape
        self.num_classes = VOCAB_CAPACITY
        self.name = name

    def refuses(self, view: View) -> str | None:
        """Why this target cannot serve ``view`` (None: it can)."""
        if view.kind == "scores":
            return "a label API reveals labels and scores, not a score vector: use pi or lo"
        if not view.k and not view.reveals_scores:
            return "a label view needs k"
        return None

    @property
    def eight_bit(self) -> bool:
        """Whether the source only ever sees 8-bit images (an API that receives PNGs)."""
        return bool(getattr(self.source, "eight_bit", False))

    @property
    def billed(self) -> bool:
        """Whether each answer costs money (a paid API)."""
        return bool(getattr(self.source, "billed", False))

    def identity(self) -> str:
        """The source, for the journal: an API's endpoint and request options."""
        fn = getattr(self.source, "identity", None)
        return f"labels|{fn() if callable(fn) else self.name}"

    def query_limit(self) -> int | None:
        """The source's own cap (queries or money left), if it has one."""
        limit = getattr(self.source, "remaining_queries", None)
        return None if limit is None else int(limit)

    def observe(self, x: FloatArray, view: View) -> Observation:
        """Query the source and build the observation ``view`` allows (top-k of what came back)."""
        why = self.refuses(view)
        if why is not None:
            raise ThreatModelError(why)
        answers = self.source.annotate(x) if len(x) else []
        k = max((len(a) for a in answers), default=0)
        if view.k is not None:
            k = min(k, view.k)
        k = max(k, 1)
        labels = np.full((len(answers), k), -1, dtype=np.int64)
        scores = np.full((len(answers), k), np.nan, dtype=np.float32)
        up = getattr(self.source, "ancestors", None)
        for i, answer in enumerate(answers):  # labels are strings: no array path exists here
            for j, (label, score) in enumerate(answer):
                label = label.replace(EDGE, "")  # an API's label is never an edge
                if j < k:
                    labels[i, j] = self.class_names.resolve(label)
                    scores[i, j] = score
                for a in up(label) if callable(up) else ():
                    self.class_names.add_ancestor(label, a)
        if view.reveals_scores:
            return TopKObservation(frozen_array(labels), frozen_array(scores))
        return LabelsObservation(frozen_array(labels))
