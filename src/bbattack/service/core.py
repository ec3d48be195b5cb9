"""The one step every wire schema shares: bill a key for some images, decode them, run the model.

``Labeller.label(key, images)`` is the only place where a call's images meet the model, so
whatever must sit in front of the model for every schema sits in :meth:`Labeller.classify`,
the forward pass for one key's batch: the defences (``bbattack serve --defense``), which see
every key's queries. A refusal is billed (the call was paid for) and answered as each
schema's 4xx (:func:`~bbattack.service.errors.refusal`).
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from .._classifier import Classifier
from ..defenses import screen
from ..errors import ImageLoadError, QueryRejected
from ..oracle import Middleware, Observation, Scores, ScoresObservation
from .decode import ALLOWED_FORMATS, decode_image
from .errors import SERVICE, ApiError, refusal
from .gateway import KeyLedger

__all__ = ["QUOTA_RETRY_AFTER_S", "Classify", "Labeller", "Outcome", "sniff"]

# A spent quota never refills while the server runs; a day is what Google's daily quotas say.
QUOTA_RETRY_AFTER_S = 86_400

FloatArray = NDArray[np.float32]
_SCORES = Scores()  # the defences see what the model says in full
# (images (N, 3, S, S) in [0, 1], the key they are billed to) -> (N, K) probabilities.
Classify = Callable[[FloatArray, str], NDArray[np.floating]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One image of a call: its class probabilities, or None if its bytes did not decode."""

    probs: NDArray[np.float64] | None


def sniff(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) from an image's header, without decoding its pixels; None for
    bytes that are no image of an allowed format. Wires use it for their format and size rules
    before anything is billed."""
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as im:
            return str(im.format), int(im.size[0]), int(im.size[1])
    # Hostile headers fail in many ways; each one means "not an image".
    except Exception:  # noqa: BLE001
        return None


class Labeller:
    """Bills, decodes and classifies one call's images; thread-safe.

    Billing: ``label`` reserves one unit per image (all or nothing, against the key's quota),
    refunds the images whose bytes do not decode, and refunds everything if the model fails;
    a call a defence refuses stays billed.

    ``defenses``: middleware layers in front of the model (outermost first), answered through
    :func:`bbattack.defenses.screen` under the full-score view. Their stores are shared by
    every key; bans and per-key histories are per key.
    """

    def __init__(
        self, model: Classifier, ledger: KeyLedger, defenses: Sequence[Middleware] = ()
    ) -> None:
        self.model = model
        self.ledger = ledger
        self.defenses = tuple(defenses)
        self.size = model.input_shape[1]
        # Decoding is CPU-bound and a large image takes hundreds of MB while it is converted:
        # a few at a time bound both, whatever the threadpool's size.
        self._decode_slots = threading.BoundedSemaphore(min(4, os.cpu_count() or 1))
        # One forward pass at a time: it uses every core anyway, and neither a Classifier nor
        # a defence (its stores, histories and bans) promises to be thread-safe.
        self._model_lock = threading.Lock()

    def classify(self, images: FloatArray, key: str) -> NDArray[np.floating]:
        """The forward pass of one key's decoded images, through the defences: raises
        QueryRejected (or KeyBanned) where one refuses the batch."""
        with self._model_lock:
            if not self.defenses:
                return self.model(images)
            obs = screen(self.defenses, images, self._scores, _SCORES, key)
        if not isinstance(obs, ScoresObservation):  # a layer that changed the view: a bug
            raise TypeError(f"a defence answered {type(obs).__name__}, not scores")
        return obs.probs

    def _scores(self, x: FloatArray) -> Observation:
        return _SCORES.observe(self.model(x))

    def label(self, key: str, images: Sequence[bytes]) -> list[Outcome]:
        """Probabilities for each image, in order, billed to ``key``.

        Raises ApiError (kind ``quota``, 429) and bills nothing if the key's quota cannot take
        them all; ApiError (kind ``rejected`` or ``banned``), billed, if a defence refuses them.
        """
        if not images:
            return []
        if not self.ledger.reserve(key, len(images)):
            raise ApiError(
                429,
                f"Quota exceeded for quota metric 'Images' and limit 'Images per API key' of "
                f"service '{SERVICE}': {len(images)} more would pass {self.ledger.quota}.",
                reason="QUOTA_EXCEEDED",
                headers={"Retry-After": str(QUOTA_RETRY_AFTER_S)},
                kind="quota",
            )
        decoded: dict[int, FloatArray] = {}
        for i, data in enumerate(images):
            try:
                with self._decode_slots:
                    decoded[i] = decode_image(data, self.size)
            except ImageLoadError:
                pass
        self.ledger.refund(key, len(images) - len(decoded))
        if not decoded:
            return [Outcome(None) for _ in images]
        try:
            probs = np.asarray(
                self.classify(np.stack(list(decoded.values())), key), dtype=np.float64
            )
        except QueryRejected as e:  # the defence's answer to a paid call: billed
            raise refusal(e, len(decoded)) from None
        except BaseException:
            self.ledger.refund(key, len(decoded))
            raise
        rows = dict(zip(decoded, probs, strict=True))
        return [Outcome(rows.get(i)) for i in range(len(images))]
