"""Other libraries' attacks as baselines, run under the query-accounting oracle.

A baseline hands a library (torchattacks, the Adversarial Robustness Toolbox) a model that is
really the :class:`~bbattack.oracle.Oracle`: every model call the library makes is a counted,
budgeted query, and the library sees only what the oracle's view reveals (log-probabilities
under ``Scores``; a one-hot of the top-1 label for the label-only attacks).

The wrapper, not the library, decides success, exactly as our own attacks do:

* before every call it checks :meth:`Oracle.affordable`, keeping one query back for the final
  verification; when the budget cannot pay, a private exception unwinds out of the library;
* the first queried image that shows the target as top-1 *inside the ball*, once rounded to
  8 bits, is the result: the library is stopped there and ``queries_at_success`` is the count at
  that point (a library that keeps going, such as HopSkipJump minimising its distance, is not
  charged for what it would have done next);
* the saved image is quantised (8-bit, inside the ball) and verified by one counted ``FINAL``
  query. With no success, the library's own output (or, when it was stopped, the best image it
  had queried) is projected into the ball and verified the same way.

A result reads like our attacks' results: ``steps`` counts the library's model calls and the
trace has one row per call (the target's best score and rank in that call, where the view
shows them; no loss, lr 0). Queries are charged by kind: the clean and start images as INIT,
searches and proposals as LINE_SEARCH, HopSkipJump's gradient samples as GRADIENT.

The libraries are imported lazily: ``import bbattack.baselines`` works without them, and a
missing one is a :class:`~bbattack.errors.BackendUnavailableError` naming the install command.
Images are attacked one at a time (the benchmark runs one image per case anyway).
"""

from typing import Any

from ..attacks.registry import public_attribute, public_classes
from .base import INSTALL_HINT, Baseline, BaselineConfig

# The wrapped attacks' classes come from the registry (see bbattack.attacks).
__all__ = ["INSTALL_HINT", "Baseline", "BaselineConfig"]
__all__ += public_classes(__name__)  # every registered attack class and its config


def __getattr__(name: str) -> Any:
    return public_attribute(__name__, name, __name__)
