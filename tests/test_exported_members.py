"""The public API: ``bbattack.__all__`` is sorted and everything in it exists."""

from __future__ import annotations

import importlib

import pytest

import bbattack

MODULES = [
    "bbattack",
    "bbattack.attacks",
    "bbattack.classes",
    "bbattack.errors",
    "bbattack.images",
    "bbattack.models",
    "bbattack.oracle",
    "bbattack.report",
    "bbattack.results",
]


def test_all_is_sorted_and_unique() -> None:
    assert bbattack.__all__ == sorted(bbattack.__all__)
    assert len(set(bbattack.__all__)) == len(bbattack.__all__)


@pytest.mark.parametrize("module", MODULES)
def test_every_exported_name_exists(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert missing == []


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from bbattack import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(bbattack.__all__)


def test_key_names_are_exported() -> None:
    for name in (
        "Oracle",
        "Scores",
        "TopK",
        "Labels",
        "Label",
        "QLAttack",
        "PIAttack",
        "LOAttack",
        "load_model",
        "load_image",
        "quantize",
        "save_png",
        "imagenet_classes",
        "BudgetExhausted",
        "ThreatModelError",
        "UserInputError",
    ):
        assert name in bbattack.__all__


def test_version() -> None:
    assert bbattack.__version__ == "0.1.0"
