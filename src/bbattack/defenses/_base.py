"""What every query detector shares: the action on detection, the counters result.json
reports, the banned keys and the last answer per key (for ``silent``).

Actions (a detector's ``action`` parameter):

* ``reject``: the flagged batch is refused, as the defended API would answer a 4xx. The
  refusal is :class:`QueryRejected`, a :class:`~bbattack.errors.TargetUnavailable` with stop
  reason ``rejected``: a plain attack stops there with its best result so far (what a
  real client does with a 4xx), and an adaptive attack catches it and goes on.
* ``ban``: as ``reject``, and the key is dead from then on: every later query is refused
  with :class:`KeyBanned` (stop reason ``banned``).
* ``silent``: the batch is answered, but each flagged image gets the last answer the key was
  given for an image not flagged (no signal: the attack sees no change). With ``noise`` > 0
  its scores are jittered first (each multiplied by exp(noise · z), z standard normal, then
  re-ranked; a full score vector renormalised), so an attacker cannot spot the stale answer
  by comparing bits. The jitter is drawn from the flagged image's position in the layer's
  stream of queries: a resumed or replayed run is answered the same.

Every refused or flagged query is charged by the oracle. A refused batch never reaches the
target: the journal records it as refused (``refused`` rows with the error; see
:meth:`bbattack.oracle.Query.refused`), and a resumed or replayed run meets the same refusal.
A silent one reaches the target, so the journal holds its true answer, which the layer then
withholds.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..errors import KeyBanned, QueryRejected, UserInputError
from ..oracle import Forward, Middleware, Observation, Query
from ..oracle._rows import Answer, assemble, split

__all__ = ["ACTIONS", "Action", "Detector", "KeyBanned", "QueryRejected", "check"]

Action = Literal["reject", "ban", "silent"]
ACTIONS: tuple[str, ...] = ("reject", "ban", "silent")
BoolArray = NDArray[np.bool_]
_NOISE_SEED = 0x51E7  # the silent jitter's stream (fixed: replays answer the same)


class Detector(Middleware):
    """A query detector. Subclasses implement :meth:`flags` (check each image, in order, and
    update their store), and extend :meth:`params`, :meth:`snapshot` and :meth:`restore`."""

    def __init__(self, action: Action, noise: float = 0.0) -> None:
        check(action in ACTIONS, f"{self.name}: action must be one of {', '.join(ACTIONS)}")
        check(0.0 <= noise <= 1.0, f"{self.name}: noise must be in [0, 1], got {noise}")
        check(noise == 0.0 or action == "silent", f"{self.name}: noise needs action=silent")
        self.action: Action = action
        self.noise = float(noise)
        self.seen = 0  # images this layer was asked about
        self.flagged = 0
        self.rejected = 0
        self.first_flagged_at: int | None = None  # 1-based, among the images this layer saw
        self.first_rejected_at: int | None = None
        self.banned: set[str] = set()
        self._last: dict[str, Answer] = {}

    @abstractmethod
    def flags(self, query: Query) -> BoolArray:
        """Whether each image of ``query`` is flagged; each is checked against the store as
        the images before it left it, then stored."""

    def params(self) -> dict[str, Any]:
        """The defence's parameters (what result.json and provenance record)."""
        return {"action": self.action, **({"noise": self.noise} if self.noise else {})}

    def on_ban(self, key: str) -> None:
        """A key was just banned (stateful detection clears its history)."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.params()}

    def counters(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "flagged": self.flagged,
            "rejected": self.rejected,
            "first_flagged_at": self.first_flagged_at,
            "first_rejected_at": self.first_rejected_at,
            "banned_keys": sorted(self.banned),
        }

    def handle(self, query: Query, forward: Forward) -> Observation:
        n, before = len(query.ids), self.seen
        self.seen += n
        if query.key in self.banned:
            self._count_refused(before, n)
            query.refused(query.x, KeyBanned(f"{query.key}: the key is banned", self.name))
        hit = self.flags(query)
        if hit.any():
            self.flagged += int(hit.sum())
            if self.first_flagged_at is None:
                self.first_flagged_at = before + int(hit.argmax()) + 1
            if self.action != "silent":
                self._count_refused(before, n)
                if self.action == "ban":
                    self.banned.add(query.key)
                    self._last.pop(query.key, None)
                    self.on_ban(query.key)
                    query.refused(query.x, KeyBanned(f"{self.name}: key banned", self.name))
                query.refused(query.x, QueryRejected(f"{self.name}: query rejected", self.name))
        obs = forward(query.x)
        return self._silence(obs, hit, query) if self.action == "silent" else obs

    def _count_refused(self, before: int, n: int) -> None:
        self.rejected += n
        if self.first_rejected_at is None:
            self.first_rejected_at = before + 1

    def _silence(self, obs: Observation, hit: BoolArray, query: Query) -> Observation:
        """Flagged rows answered with the key's last unflagged answer (their own where the key
        has none yet); the last unflagged row becomes the key's last answer."""
        if not len(obs):
            return obs
        rows = split(obs)
        last = self._last.get(query.key)
        first = self.seen - len(rows)  # the batch's first image, in this layer's stream
        for j in range(len(rows)):
            if hit[j] and last is not None:
                rows[j] = _jitter(last, first + j, self.noise) if self.noise else last
            elif not hit[j] or last is None:
                last = rows[j]
        assert last is not None
        self._last[query.key] = last
        return assemble(query.view, rows) if hit.any() else obs

    # -- plain data for checkpoints

    def snapshot(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "flagged": self.flagged,
            "rejected": self.rejected,
            "first_flagged_at": self.first_flagged_at,
            "first_rejected_at": self.first_rejected_at,
            "banned": sorted(self.banned),
            "last": {
                k: {"labels": a.labels, "scores": a.scores} for k, a in sorted(self._last.items())
            },
        }

    def restore(self, snap: dict[str, Any]) -> None:
        self.seen, self.flagged = int(snap["seen"]), int(snap["flagged"])
        self.rejected = int(snap["rejected"])
        self.first_flagged_at = _opt_int(snap["first_flagged_at"])
        self.first_rejected_at = _opt_int(snap["first_rejected_at"])
        self.banned = {str(k) for k in snap["banned"]}
        self._last = {str(k): Answer(v["labels"], v["scores"]) for k, v in snap["last"].items()}


def _jitter(answer: Answer, index: int, noise: float) -> Answer:
    """``answer`` with its scores multiplied by exp(noise · z), z drawn from the image's
    ``index`` alone; ranked rows re-ranked, a full vector renormalised. No scores: as is."""
    if answer.scores is None:
        return answer
    scores = np.frombuffer(answer.scores, "<f4").astype(np.float64)
    z = np.random.default_rng([_NOISE_SEED, index]).standard_normal(len(scores))
    new = scores * np.exp(noise * z)
    if answer.labels is None:  # the whole vector: probabilities again
        return Answer(None, (new / max(new.sum(), 1e-30)).astype("<f4").tobytes())
    order = np.argsort(-new, kind="stable")
    labels = np.frombuffer(answer.labels, "<i8")[order]
    return Answer(labels.astype("<i8").tobytes(), new[order].astype("<f4").tobytes())


def check(ok: bool, message: str) -> None:
    """A defence parameter out of range: one line for the user."""
    if not ok:
        raise UserInputError(message)


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)
