"""The registry finds attacks by itself: a file dropped into the attack folder, or a plug-in
package's entry point, is listed, runs from the CLI and is held to the contract; each attack's
checkpoints follow its own code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import bbattack
from bbattack.attacks import registry
from bbattack.attacks._code_hash import code_closure, code_digest
from bbattack.attacks.checkpoint import attack_version
from bbattack.images import bundled_photos

SRC = Path(bbattack.__file__).resolve().parent
TESTS = Path(__file__).resolve().parents[1]

THROWAWAY = '''
"""A throwaway attack: Square under another name (tests only).

Paper: none. Threat model: full scores. Norm: L∞. Query cost per step: 1.
"""
from bbattack.attacks.registry import Paper, register
from bbattack.attacks.score.square import SquareAttack


@register(
    "throwaway",
    paper=Paper("A throwaway", "Nobody", "Tests", "0000.00000"),
    views=("scores",),
    budget=100,
)
class ThrowawayAttack(SquareAttack):
    """Square, renamed. Query cost per step: 1 (as Square)."""
'''


def _python(
    env_path: Path, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(env_path), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


@pytest.fixture(scope="module")
def dropped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the package with one new file in its attack folder, and nothing else edited."""
    root = tmp_path_factory.mktemp("dropped")
    shutil.copytree(SRC, root / "bbattack", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "bbattack" / "attacks" / "throwaway.py").write_text(THROWAWAY)
    # A family folder is an attack folder too.
    in_family = THROWAWAY.replace('"throwaway"', '"throwaway-score"').replace("Throwaway", "Scored")
    (root / "bbattack" / "attacks" / "score" / "scored.py").write_text(in_family)
    return root


def test_a_dropped_attack_file_is_listed_and_public(dropped: Path) -> None:
    out = _python(
        dropped,
        "-c",
        "import bbattack; from bbattack.attacks import registry;"
        "print(bbattack.__file__); print(list(registry.all_attacks()));"
        "print(bbattack.ThrowawayAttack.name, 'ThrowawayAttack' in bbattack.__all__)",
    )
    assert out.returncode == 0, out.stderr
    where, names, public = out.stdout.splitlines()
    assert where.startswith(str(dropped))
    assert "'throwaway'" in names
    assert "'throwaway-score'" in names
    assert public == "throwaway True"
    listing = _python(dropped, "-m", "bbattack", "attacks", "--json")
    assert listing.returncode == 0, listing.stderr
    assert "throwaway" in {a["name"] for a in json.loads(listing.stdout)}


def test_a_dropped_attack_runs_from_the_cli(dropped: Path, tmp_path: Path) -> None:
    photo = str(bundled_photos()["chelsea"])
    argv = ["-m", "bbattack", "attack", photo, "--attack", "throwaway", "--untargeted"]
    out = _python(dropped, *argv, "--max-queries", "20", "--out", str(tmp_path / "o"), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    assert result["attack"] == "throwaway"
    assert 0 < result["queries"] <= 20


def test_a_dropped_attack_is_held_to_the_contract(dropped: Path) -> None:
    out = _python(
        dropped, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
        str(TESTS / "attacks" / "test_contract.py"), cwd=TESTS.parent,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    collected = [line for line in out.stdout.splitlines() if "[throwaway]" in line]
    assert len(collected) == 4  # each contract test, parametrised over the registry


def test_a_plug_in_package_registers_through_its_entry_point(tmp_path: Path) -> None:
    (tmp_path / "myattacks.py").write_text(THROWAWAY.replace('"throwaway"', '"plugged"'))
    info = tmp_path / "myattacks-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myattacks\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[bbattack.attacks]\nplugged = myattacks\n")
    out = _python(
        tmp_path, "-c", "from bbattack.attacks import registry; print(list(registry.all_attacks()))"
    )
    assert out.returncode == 0, out.stderr
    assert "'plugged'" in out.stdout


def test_a_broken_plug_in_is_named_and_the_rest_still_load(tmp_path: Path) -> None:
    info = tmp_path / "broken-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[bbattack.attacks]\nbroken = no_such_module\n")
    out = _python(
        tmp_path, "-c", "from bbattack.attacks import registry; print(len(registry.all_attacks()))"
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(registry.all_attacks())
    assert "plug-in attack broken (no_such_module) did not load" in out.stderr


def test_an_attack_version_follows_its_own_code_only() -> None:
    square = {name for name, _ in code_closure("bbattack.attacks.score.square")}
    assert "bbattack.attacks.score.square" in square
    assert "bbattack.attacks.base" in square  # what it imports counts
    # Another attack's file is not Square's code: editing it keeps Square's checkpoints valid.
    assert (
        not {"bbattack.attacks.score.simba", "bbattack.attacks.label.hsj", "bbattack.cli"} & square
    )
    assert code_digest("bbattack.attacks.score.square") != code_digest(
        "bbattack.attacks.score.simba"
    )
    assert attack_version("bbattack.attacks.score.square").endswith(
        code_digest("bbattack.attacks.score.square")
    )
    transfer = {name for name, _ in code_closure("bbattack.attacks.transfer.transfer")}
    assert "bbattack.attacks.score.square" in transfer  # transfer hands rows over to Square


def test_the_public_names_come_from_the_registry() -> None:
    for info in registry.all_attacks().values():
        home = bbattack.baselines if info.baseline else bbattack.attacks
        assert getattr(home, info.cls.__name__) is info.cls
        assert info.cls.__name__ in home.__all__
        if not info.baseline:
            assert getattr(bbattack, info.cls.__name__) is info.cls
            assert info.cls.config_class.__name__ in bbattack.__all__


def test_every_attack_says_where_its_defaults_were_chosen() -> None:
    table = registry.all_attacks()
    assert all(info.to_json()["tuned"] for info in table.values())
    assert "tuning split, 2026-12-07" in table["square"].to_json()["tuned"]
    assert table["ta-square"].to_json()["tuned"] == "the library's published defaults"
