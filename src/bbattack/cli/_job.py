"""What ``bbattack attack`` was asked to do, and every check of it that needs no file and no
query: the job, its view and its attack."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..attacks import registry
from ..attacks.balls import make_ball
from ..attacks.checks import check_surrogates
from ..attacks.goals import Within
from ..defenses import parse_specs
from ..errors import UserInputError
from ..oracle import View
from ..oracle.views import threat_view
from ..targets.spec import parse_spec
from ._common import BackendOpt, Threat, validation_message
from ._remote import RemoteOptions

__all__ = ["AttackJob", "check_job", "make_attack", "make_view"]


def make_view(threat: Threat, k: int) -> View:
    """The view a local model is attacked through."""
    return threat_view(threat.value, k)


def make_attack(
    info: registry.AttackInfo, norm: str, eps: float, params: dict[str, Any]
) -> registry.Runnable:
    for axis in ("eps", "norm"):
        if axis in params:
            raise UserInputError(f"give --{axis}, not --param {axis}=...")
    try:
        return registry.build(info.name, norm=norm, eps=eps, **params)
    except ValidationError as e:
        raise UserInputError(validation_message(e)) from None
    except TypeError as e:
        raise UserInputError(str(e)) from None


@dataclass(frozen=True)
class AttackJob:
    """Everything ``bbattack attack`` was asked to do."""

    image: Path
    target: str | None
    threat: Threat = Threat.ql
    k: int | None = None
    eps: float = 0.05
    max_queries: int | None = None
    start_image: Path | None = None
    untargeted: bool = False
    seed: int = 0
    out_dir: Path | None = None  # None: a fresh timestamped directory under bbattack-out/
    as_json: bool = False
    backend: BackendOpt = BackendOpt.auto
    params: tuple[str, ...] = ()
    success: str = "top1"
    remote: RemoteOptions | None = None
    attack: str | None = None  # None: the threat model's default attack
    norm: str = "linf"
    overwrite: bool = False  # --force: start over in a non-empty out_dir (the journal stays)
    model: str | None = None  # a model spec (None: lite0; targets.spec); not with a label API
    surrogates: tuple[str, ...] = ()  # model specs (built-in names, files, ...), or "all"
    resume: bool = False  # go on with the run in out_dir, from its latest checkpoint
    checkpoint_every: str = "60s"  # steps (50) or a time (30s, 5m)
    defenses: tuple[str, ...] = ()  # --defense specs, outermost first (a local target only)
    adaptive: bool = False  # --adaptive: the attack's adaptive version (registry.adaptive_of)

    @property
    def goal(self) -> Within:
        return "topk" if self.success == "topk" else "top1"  # validated by _check_job


def check_job(job: AttackJob) -> registry.AttackInfo:
    """Every check that needs no file and no query; returns the attack to run."""
    info = (
        registry.get(job.attack)
        if job.attack
        else registry.default_attack(
            job.threat.value, job.untargeted, bool(job.surrogates), job.norm
        )
    )
    if job.adaptive:
        info = registry.adaptive_of(info)
    check_surrogates(info, job.surrogates)
    if job.model is not None:
        if job.remote is not None:
            raise UserInputError("--model names a local target; a label API is its own model")
        parse_spec(job.model)  # a bad spec (or a missing file) is refused here
    try:
        make_ball(job.norm, job.eps)
    except UserInputError as e:
        raise UserInputError(f"--eps: {e}") from None
    why = registry.view_refusal(info, make_view(job.threat, job.k or 1), job.norm)
    if why is not None:
        raise UserInputError(why)
    if job.k is not None and job.k < 1:
        raise UserInputError(f"--k must be >= 1, got {job.k}")
    if job.max_queries is not None and job.max_queries < 1:
        raise UserInputError(f"--max-queries must be >= 1, got {job.max_queries}")
    if job.untargeted and job.target is not None:
        raise UserInputError("--untargeted and --target are mutually exclusive")
    if not job.untargeted and job.target is None:
        raise UserInputError("give --target NAME|ID, or --untargeted")
    if job.untargeted and not info.untargeted:
        threat_of = {v: t for t, v in registry.THREAT_VIEWS.items()}
        can = [
            f"{i.name} (--threat {threat_of[i.views[0]]})"
            for i in registry.all_attacks().values()
            if i.untargeted
        ]
        raise UserInputError(
            f"{info.name} is a targeted attack; --untargeted needs one of: {', '.join(can)}"
        )
    # A surrogate-guided PI attack falls back to the start image where no transfer shows.
    if job.start_image is not None and not (info.needs_start or info.uses_surrogate):
        raise UserInputError(
            f"--start-image applies to attacks that start in the target class; {info.name} does not"
        )
    if job.success not in ("top1", "topk"):
        raise UserInputError(f"--success must be top1 or topk, got {job.success!r}")
    if job.success == "topk" and job.threat is Threat.ql:
        raise UserInputError("--success topk applies to --threat pi or lo")
    if job.defenses:
        if job.remote is not None:
            raise UserInputError(
                "--defense puts a defence in front of a local model; a label API's defence is "
                "its own (bbattack serve --defense)"
            )
        parse_specs(job.defenses)
    if job.remote is not None and job.threat is Threat.ql and not job.remote.every_class:
        raise UserInputError(
            "a label API reveals labels (and scores), not a score vector, unless it is asked "
            "for every class (RemoteOptions.every_class): use --threat pi or lo"
        )
    return info
