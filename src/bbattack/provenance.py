"""Provenance: what a result was made with, recorded in every result.json and bench case.

Package versions, the target (model name, weights hash, backend, device; or an API's
endpoint), the config and its hash, the seed, the attack code's version, the machine, and the
journal file with its last sequence number and hash-chain head.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from typing import Any

__all__ = ["ENVIRONMENT_KEYS", "config_hash", "describe_target", "packages", "provenance"]

_PACKAGES = (
    "bbattack",
    "numpy",
    "torch",
    "onnxruntime",
    "pydantic",
    "httpx",
    "torchattacks",
    "adversarial-robustness-toolbox",
)
# Keys that describe where a result was computed, not what it is: a replay elsewhere differs.
ENVIRONMENT_KEYS = ("packages", "machine", "attack_version")


def packages() -> dict[str, str]:
    """Installed versions of bbattack and the libraries that shape its results."""
    out = {}
    for n in _PACKAGES:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 (16 hex) of a config's canonical JSON."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe_target(target: Any, identity: str) -> dict[str, Any]:
    """A model's (or API's) name, weights hash, backend and device, and its identity string;
    for a model loaded from a spec, the spec and its resolved preprocessing."""
    weights = getattr(target, "weights_id", None) or getattr(target, "digest", None)
    device = getattr(target, "device", None)
    if device is None:
        providers = getattr(target, "providers", None)
        device = providers[0] if providers else ("remote" if target is None else "cpu")
    out = {
        "identity": identity,
        "name": getattr(target, "name", None),
        "weights": None if weights is None else str(weights),
        "backend": getattr(target, "backend", None),
        "device": str(device),
        "family": getattr(target, "family", None),
    }
    # A model loaded from a spec (a file, module:function, ...): the spec and the
    # preprocessing it resolved to. Absent for the built-in models, whose blocks stay as were.
    if getattr(target, "spec", None) is not None:
        out["spec"] = target.spec
        out["preprocessing"] = getattr(target, "preprocessing", None)
    return out


def provenance(
    *,
    target: dict[str, Any],
    config: dict[str, Any],
    seed: int,
    journal: dict[str, Any] | None,
) -> dict[str, Any]:
    """The provenance block of a result."""
    from .attacks.checkpoint import attack_version
    from .bench.machine import describe

    return {
        "packages": packages(),
        "machine": describe(),
        "attack_version": attack_version(),
        "target": target,
        "config": config,
        "config_hash": config_hash(config),
        "seed": seed,
        "journal": journal,
    }
