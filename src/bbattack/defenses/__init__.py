"""Defences in front of a target, as oracle middleware (one file each): the query detectors
Blacklight, PIHA and stateful detection (each with an action on detection: reject, ban or
silent), RND's input noise and AAA's score post-processing.

In an attack they sit in the oracle's stack (``Oracle(..., middleware=[...])``, or
``bbattack attack --defense SPEC``); a service calls :func:`screen` with the layers and its
own ``forward`` (the model), and maps :class:`QueryRejected` to its schema's 4xx.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..oracle import Forward, Middleware, Observation, Query, View
from ._base import Action, Detector, KeyBanned, QueryRejected
from .aaa import Aaa
from .blacklight import Blacklight
from .piha import Piha
from .rnd import Rnd
from .spec import DEFENSES, build, from_config, parse_spec, parse_specs
from .stateful import Stateful

__all__ = [
    "DEFENSES",
    "Aaa",
    "Action",
    "Blacklight",
    "Detector",
    "KeyBanned",
    "Piha",
    "QueryRejected",
    "Rnd",
    "Stateful",
    "build",
    "defense_block",
    "from_config",
    "parse_spec",
    "parse_specs",
    "screen",
]


def screen(
    layers: Sequence[Middleware],
    x: NDArray[np.float32],
    forward: Forward,
    view: View,
    key: str = "local",
    kind: str = "service",
) -> Observation:
    """Answer a batch through ``layers`` (outermost first) over ``forward``, as the oracle's
    stack would, outside an oracle (a service): raises :class:`QueryRejected` (or
    :class:`KeyBanned`) where a layer refuses the batch; nothing is recorded."""
    ids = np.arange(len(x), dtype=np.int64)
    below = forward
    for m in reversed(layers):
        below = _bind(m, ids, kind, view, key, below)
    return below(np.asarray(x, np.float32))


def _bind(m: Middleware, ids: Any, kind: str, view: View, key: str, below: Forward) -> Forward:
    return lambda x: m.handle(Query(x, ids, kind, view, key), below)


def defense_block(layers: Sequence[Middleware]) -> dict[str, Any]:
    """result.json's ``defense`` block: the refused queries, the query number of the first
    refusal (counted at the outermost layer, which sees every query), whether the key died,
    and each layer's name, parameters and counters."""
    detectors = [m for m in layers if isinstance(m, Detector)]
    firsts = [d.first_rejected_at for d in detectors if d.first_rejected_at is not None]
    flagged = [d.first_flagged_at for d in detectors if d.first_flagged_at is not None]
    return {
        "rejected": sum(d.rejected for d in detectors),
        "first_rejected_at": min(firsts) if firsts else None,
        "flagged": sum(d.flagged for d in detectors),
        "first_flagged_at": min(flagged) if flagged else None,
        "banned": any(d.banned for d in detectors),
        "layers": [
            {**m.describe(), **(m.counters() if isinstance(m, Detector) else {})} for m in layers
        ],
    }
