"""A similarity detector the attacker assumes, run on its own side (adaptive Square's
``screen``): it keeps a key per query it has sent (PIHA's hash, Blacklight's fingerprint) and
checks each candidate against them before paying for it.

The defence is public and its parameters are published; what the attacker cannot see is the
store. An account-oblivious store holds other clients' queries too, but those are other
photos, far from every candidate; what flags an attack's candidate is the attack's own
earlier queries of the same photo, and those the attacker knows. The screen keeps them all:
it ignores the detector's ``reset`` and ``capacity`` (other clients' queries move those, and
the attacker cannot see them), so after a reset it redraws more than it needs to. A
candidate the local copy would flag is redrawn for free instead of being sent to be refused.
Keys are plain arrays (uint64 rows), so they live in the attack's state: a checkpoint holds
them, a resumed run screens the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ...defenses.blacklight import Blacklight, fingerprint
from ...defenses.piha import Piha, perceptual_bits
from ...defenses.spec import build, parse_spec
from ...errors import UserInputError

__all__ = ["SCREENS", "Screen", "make_screen", "remember", "screen_rows"]

U64 = NDArray[np.uint64]
SCREENS = ("piha", "blacklight")


@dataclass(frozen=True)
class Screen:
    """The assumed detector: its kind, parameters and key width (uint64 words)."""

    kind: str
    params: dict[str, Any]
    width: int

    def key(self, img: NDArray[np.floating]) -> U64:
        """One image's key: PIHA's bits packed in words, or Blacklight's top hashes (zeros
        where an image has fewer windows)."""
        p = self.params
        if self.kind == "piha":
            bits = perceptual_bits(img, p["grid"], p["sigma"], p["channel"])
            raw = np.packbits(bits, bitorder="little").tobytes().ljust(self.width * 8, b"\0")
            return np.frombuffer(raw, "<u8").astype(np.uint64)
        fp = fingerprint(img, p["step"], p["window"], p["stride"], p["top"], p["hash"])
        out = np.zeros(self.width, np.uint64)
        out[: len(fp)] = fp
        return out

    def flags(self, held: U64, key: U64) -> bool:
        """Whether the detector would flag ``key`` given the keys ``held`` (M, width)."""
        if not len(held):
            return False
        p = self.params
        if self.kind == "piha":
            bits = p["grid"] * p["grid"] * 8
            d = np.bitwise_count(held ^ key).sum(axis=1, dtype=np.int64)
            return bool(d.min() <= int(np.ceil(p["threshold"] * bits)) - 1)
        common = np.isin(held, key[key != 0]) & (held != 0)
        return bool(common.sum(axis=1).max() >= p["threshold"])


def make_screen(spec: str) -> Screen:
    """The screen of a defence spec (``piha``, ``blacklight:window=50,hash=mix64``): its
    parameters checked as ``--defense`` checks them. UserInputError for another defence."""
    config = parse_spec(spec)
    if config["name"] not in SCREENS:
        raise UserInputError(
            f"screen {spec!r}: only a similarity detector can be screened ({', '.join(SCREENS)})"
        )
    det = build(config)
    if isinstance(det, Piha):
        return Screen("piha", det.params(), (det.bits + 63) // 64)
    assert isinstance(det, Blacklight)
    return Screen("blacklight", det.params(), det.top)


def screen_rows(
    screen: Screen,
    held: U64,
    owner: NDArray[np.int64],
    rows: NDArray[np.int64],
    cand: NDArray[np.floating],
    redraw: Callable[[int], None],
    tries: int,
) -> U64:
    """Redraw (``redraw(j)`` replaces ``cand[j]`` in place) each candidate the detector would
    flag, up to ``tries`` draws in all per row; the last draw stays whatever it shows. Each
    image is screened against its own keys only (``owner``): other photos are far from it for
    a similarity detector, and an image's run then does not depend on its batch. Returns the
    keys of the candidates as they stand (to remember when they are sent)."""
    keys = np.empty((len(cand), screen.width), np.uint64)
    for j, r in enumerate(rows):
        mine = held[owner == r]
        key = screen.key(cand[j])
        for _ in range(tries - 1):
            if not screen.flags(mine, key):
                break
            redraw(j)
            key = screen.key(cand[j])
        keys[j] = key
    return keys


def remember(
    screen: Screen,
    held: U64,
    owner: NDArray[np.int64],
    x: NDArray[np.floating],
    rows: NDArray[np.int64],
    keys: U64 | None = None,
) -> tuple[U64, NDArray[np.int64]]:
    """``held`` and ``owner`` with the keys of the images ``x`` (sent, in order, for images
    ``rows``) appended; ``keys``: theirs, where already computed."""
    if not len(x):
        return held, owner
    if keys is None:
        keys = np.stack([screen.key(img) for img in x])
    return np.concatenate([held, keys]), np.concatenate([owner, np.asarray(rows, np.int64)])
