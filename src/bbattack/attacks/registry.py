"""The attack registry: the one place that lists attacks, ours and the wrapped baselines.

Each attack declares, with :func:`register`, its name, paper, the views it can work under, the
norms it supports, targeted/untargeted, whether it needs a start image or a surrogate, its
default budget and the threat models it is the default for. The CLI, the bench config and the
report read this table; nothing else lists attacks.

Attacks are discovered, not listed: every module under ``bbattack.attacks`` and
``bbattack.baselines`` whose name has no leading underscore is imported, and so is every entry
point of the group ``bbattack.attacks`` (how another package registers its attacks). Adding an
attack is adding one file that calls :func:`register`.
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import entry_points
from typing import Any, Literal, TypeVar

from ..errors import UserInputError
from ..oracle import View
from ..oracle.views import THREAT_VIEWS
from .request import Runnable

__all__ = [
    "THREAT_VIEWS",
    "AttackInfo",
    "Paper",
    "Runnable",
    "adaptive_of",
    "all_attacks",
    "build",
    "default_attack",
    "discover",
    "get",
    "public_attribute",
    "public_classes",
    "register",
    "view_refusal",
]

ViewKind = Literal["scores", "topk", "labels"]
VIEW_KINDS: tuple[ViewKind, ...] = ("scores", "topk", "labels")
# Packages whose modules are imported to register attacks (baselines import their libraries
# lazily, so importing them costs nothing), and the entry-point group of plug-in attacks.
_PACKAGES = ("bbattack.attacks", "bbattack.baselines")
ENTRY_POINT_GROUP = "bbattack.attacks"


@dataclass(frozen=True)
class Paper:
    title: str
    authors: str
    venue: str
    arxiv: str

    def cite(self) -> str:
        return f"{self.authors}, {self.venue} (arXiv:{self.arxiv})"


@dataclass(frozen=True)
class AttackInfo:
    """What an attack declares about itself."""

    name: str
    cls: type[Any]
    paper: Paper
    views: tuple[ViewKind, ...]
    norms: tuple[str, ...]
    targeted: bool
    untargeted: bool
    needs_start: bool
    uses_surrogate: bool
    budget: int
    baseline: bool  # another library's attack, wrapped behind our oracle
    default_for: tuple[str, ...]  # threat models (ql, pi, lo) it is the default attack of
    rank: int  # listing order, and which default wins a tie: lower first
    against: tuple[str, ...] = ()  # defences it is built to get past (bbattack.defenses names)
    tuned: str = ""  # where its defaults were chosen: the grid or search, and the date
    adapts: str = ""  # the attack it is the adaptive version of (--adaptive picks it)

    @property
    def tuned_on(self) -> str:
        """Where the defaults come from, in words (a default for what is not declared)."""
        if self.tuned:
            return self.tuned
        if self.baseline:
            return "the library's published defaults"
        return "not yet searched on the tuning split (defaults from the paper or bundled photos)"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("cls")
        d.pop("rank")
        d["paper"] = asdict(self.paper)
        d["views"] = list(self.views)
        d["norms"] = list(self.norms)
        d["default_for"] = list(self.default_for)
        d["against"] = list(self.against)
        d["tuned"] = self.tuned_on
        return d


_REGISTRY: dict[str, AttackInfo] = {}
T = TypeVar("T", bound=type[Any])


def register(
    name: str,
    *,
    paper: Paper,
    views: tuple[ViewKind, ...],
    norms: tuple[str, ...] = ("linf",),
    targeted: bool = True,
    untargeted: bool = True,
    needs_start: bool = False,
    uses_surrogate: bool = False,
    budget: int,
    baseline: bool = False,
    default_for: tuple[str, ...] = (),
    rank: int = 100,
    against: tuple[str, ...] = (),
    tuned: str = "",
    adapts: str = "",
) -> Callable[[T], T]:
    """Class decorator: declare an attack. The class gets its ``info`` and ``name``.

    ``against`` names the defences (``bbattack.defenses``) the attack is built to get past:
    an adaptive attack's declaration, read by the bench report. ``tuned`` says where its
    defaults were chosen (the grid or ``bbattack tune`` search, and the date). ``adapts``
    names the attack it is the adaptive version of (``--adaptive``, ``adaptive = true``).

    ``rank`` orders the listing (ours, then the baselines, each by rank then name) and so
    decides which of two defaults of a threat model, or of two surrogate attacks, is picked."""
    bad = set(views) - set(VIEW_KINDS)
    if bad or not views:
        raise ValueError(f"{name}: views must be among {VIEW_KINDS}, got {views}")

    def deco(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"attack {name!r} is registered twice")
        info = AttackInfo(
            name=name,
            cls=cls,
            paper=paper,
            views=views,
            norms=norms,
            targeted=targeted,
            untargeted=untargeted,
            needs_start=needs_start,
            uses_surrogate=uses_surrogate,
            budget=budget,
            baseline=baseline,
            default_for=default_for,
            rank=rank,
            against=against,
            tuned=tuned,
            adapts=adapts,
        )
        _REGISTRY[name] = info
        cls.name = name
        cls.info = info
        return cls

    return deco


def all_attacks() -> dict[str, AttackInfo]:
    """Every registered attack, ours first, then the baselines, each by rank then name."""
    discover()
    table = sorted(_REGISTRY.values(), key=lambda i: (i.baseline, i.rank, i.name))
    return {i.name: i for i in table}


_discovered: list[bool] = []


def discover() -> None:
    """Import every attack module once: the packages' public modules, then the plug-ins."""
    if _discovered:
        return
    _discovered.append(True)
    for package in _PACKAGES:
        for name in _public_modules(package):
            importlib.import_module(name)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        # A broken plug-in is another package's bug: ours keep working, and it is named.
        try:
            ep.load()
        except Exception as e:  # noqa: BLE001
            warnings.warn(
                f"plug-in attack {ep.name} ({ep.value}) did not load: {type(e).__name__}: {e}",
                stacklevel=2,
            )


def _public_modules(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    found = pkgutil.walk_packages(pkg.__path__, package + ".")
    return sorted(
        m.name for m in found if not any(p.startswith("_") for p in m.name.split(".")[2:])
    )


def public_classes(package: str) -> dict[str, type[Any]]:
    """The attacks registered by ``package``'s modules (imported here), each class and its
    config class by class name: how ``bbattack.attacks`` and ``bbattack.baselines`` build their
    public names from the registry."""
    for name in _public_modules(package):
        importlib.import_module(name)
    out: dict[str, type[Any]] = {}
    for info in sorted(_REGISTRY.values(), key=lambda i: (i.rank, i.name)):
        if not info.cls.__module__.startswith(package + "."):
            continue
        out[info.cls.__name__] = info.cls
        config = getattr(info.cls, "config_class", None)
        if config is not None:
            out[config.__name__] = config
    return out


def public_attribute(package: str, name: str, module: str | None = None) -> type[Any]:
    """A module's ``__getattr__``: the attack class or config of ``package`` called ``name``
    (``module``: the module asked, for the error; default ``package``)."""
    classes = public_classes(package)
    if name not in classes:
        raise AttributeError(f"module {module or package!r} has no attribute {name!r}")
    return classes[name]


def get(name: str) -> AttackInfo:
    """The attack called ``name``; an unknown name is a user error listing the known ones."""
    table = all_attacks()
    if name not in table:
        raise UserInputError(f"unknown attack {name!r}; choose one of {', '.join(table)}")
    return table[name]


def build(name: str, **config: Any) -> Runnable:
    """The attack ``name`` with its config (validated; a bad value raises ValidationError)."""
    cls = get(name).cls
    out: Runnable = cls(cls.config_class(**config))
    return out


def default_attack(
    threat: str, untargeted: bool = False, surrogate: bool = False, norm: str | None = None
) -> AttackInfo:
    """The attack a threat model (ql, pi, lo) uses when none is named, for the goal: the first
    registered default of that threat model that can run the goal (or, failing that, the
    first default at all, whose refusal then says what the goal needs). With ``surrogate``:
    the first surrogate-guided attack that works under the threat model's view (and ``norm``)."""
    if threat not in THREAT_VIEWS:
        raise UserInputError(f"unknown threat model {threat!r}; choose ql, pi or lo")
    table = all_attacks().values()
    if surrogate:
        guided = [
            i
            for i in table
            if i.uses_surrogate
            and THREAT_VIEWS[threat] in i.views
            and (norm is None or norm in i.norms)
        ]
        fits = [i for i in guided if (i.untargeted if untargeted else i.targeted)]
        if fits or guided:
            return (fits or guided)[0]
    defaults = [i for i in table if threat in i.default_for]
    fits = [i for i in defaults if (i.untargeted if untargeted else i.targeted)]
    return (fits or defaults)[0]


def adaptive_of(info: AttackInfo) -> AttackInfo:
    """The adaptive version of ``info`` (``--adaptive``): itself if it is one; refused, with
    the attacks that have one, where there is none."""
    if info.adapts:
        return info
    table = all_attacks().values()
    found = [i for i in table if i.adapts == info.name]
    if found:
        return found[0]
    have = ", ".join(sorted(i.adapts for i in table if i.adapts))
    raise UserInputError(f"{info.name} has no adaptive version; attacks with one: {have}")


def view_refusal(info: AttackInfo, view: View, norm: str | None = None) -> str | None:
    """Why ``info`` cannot run under ``view`` (and ``norm``); None when it can."""
    if view.kind not in info.views:
        return (
            f"{info.name} cannot run under the {view.kind} view: it needs "
            f"{' or '.join(info.views)} ({', '.join(_threats(info))})"
        )
    if norm is not None and norm not in info.norms:
        return f"{info.name} supports the norms {', '.join(info.norms)}, not {norm}"
    return None


def _threats(info: AttackInfo) -> list[str]:
    names = {v: t for t, v in THREAT_VIEWS.items()}
    return [f"--threat {names[v]}" for v in info.views]
