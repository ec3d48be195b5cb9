"""Exception tree.

BBAttackError                 base of everything bbattack raises on purpose
├── UserInputError            a user can cause it (bad file, unknown class, bad flag): CLI exit 2
│   ├── ImageLoadError
│   ├── UnknownClassError
│   ├── StartImageError
│   ├── BackendUnavailableError
│   └── ViewRefused           (also a ThreatModelError) a target cannot serve the view asked for
└── OracleError
    ├── BudgetExhausted       a query batch would cross a budget; nothing was charged or evaluated
    ├── ThreatModelError      an attack asked for more than the oracle's view reveals
    └── TargetUnavailable     the target stopped answering (a spent quota, a service that stays
        │                     down): an attack stops with its ``stop_reason``, keeping its result
        └── QueryRejected     a defence refused the query (``rejected``): an answer, not a failure
            └── KeyBanned     the key is banned (``banned``): every later query is refused
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "TARGET_DOWN_REASONS",
    "BBAttackError",
    "BackendUnavailableError",
    "BudgetExhausted",
    "ImageLoadError",
    "KeyBanned",
    "OracleError",
    "QueryRejected",
    "StartImageError",
    "TargetUnavailable",
    "ThreatModelError",
    "UnknownClassError",
    "UserInputError",
    "ViewRefused",
]


class BBAttackError(Exception):
    """Base class of bbattack's own errors."""


class UserInputError(BBAttackError, ValueError):
    """Bad input that the user can fix; the CLI prints it on one line and exits with code 2."""


class ImageLoadError(UserInputError):
    """A file is missing, unreadable, corrupt or not an image."""


class UnknownClassError(UserInputError):
    """A class name or id matches no class, or more than one."""


class StartImageError(UserInputError):
    """PI/LO need a start image that the oracle puts in the top-k for the target."""


class BackendUnavailableError(UserInputError):
    """A requested inference backend is not installed or cannot run here."""


class OracleError(BBAttackError):
    """Base class of errors raised by the query oracle."""


class BudgetExhausted(OracleError):  # noqa: N818 - reads as a state, like StopIteration
    """A query batch would cross a per-example or total budget.

    The oracle refuses the whole batch: no row is evaluated and nothing is charged.
    """


class ThreatModelError(OracleError):
    """An attack needs information that the oracle's view does not reveal."""


class ViewRefused(ThreatModelError, UserInputError):  # noqa: N818 - reads as a state
    """A target cannot serve a view (a label API has no score vector); raised when the oracle
    is built, before anything is paid."""


class TargetUnavailable(OracleError):  # noqa: N818 - reads as a state, like BudgetExhausted
    """The target cannot answer any more queries: a remote API's quota is spent, or it stayed
    down through every retry. An attack that meets it stops every running image with
    ``stop_reason`` and returns the best result so far (nothing more is sent to verify it);
    what was charged stays counted."""

    stop_reason: ClassVar[str] = "target_unavailable"

    def __init_subclass__(cls, **kw: object) -> None:
        super().__init_subclass__(**kw)
        TARGET_DOWN_REASONS.add(cls.stop_reason)


# The stop reasons of TargetUnavailable and of every subclass defined (bbattack.remote's
# ``quota``, ``remote_unavailable``, ``remote_error``, ``remote_auth``; a defence's refusal),
# read from the classes as they are defined: a new one needs no edit here.
TARGET_DOWN_REASONS: set[str] = {TargetUnavailable.stop_reason}


class QueryRejected(TargetUnavailable):
    """A defence in front of the target refused the query (the API's 4xx). Unlike a target
    that is down, this is the target's answer: the journal keeps it on its tape (status
    ``refused``), and an adaptive attack may take it as a signal and go on. Carries the
    defence's name."""

    stop_reason: ClassVar[str] = "rejected"
    # A remote API's refusal: the images of the same request that other calls answered and
    # that were billed (positions in the request), for the query journal.
    billed_rows: tuple[int, ...] = ()

    def __init__(self, message: str, defense: str = "") -> None:
        super().__init__(message)
        self.defense = defense


class KeyBanned(QueryRejected):
    """The key is banned: every query from it is refused from now on."""

    stop_reason: ClassVar[str] = "banned"
