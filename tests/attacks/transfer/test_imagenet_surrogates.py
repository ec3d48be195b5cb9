"""The built-in Lite1 and Lite2 as targets and surrogates: their labels, the surrogate-guided
attack on Lite0 from the CLI, and the refusals (the target itself, a surrogate for an attack
that takes none), each before the first query and with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bbattack import OnnxClassifier, bundled_photos, load_image, load_model
from bbattack.cli import main
from bbattack.surrogates import resolve_surrogates

pytestmark = pytest.mark.imagenet

ESPRESSO = 967


def photo(name: str) -> str:
    return str(bundled_photos()[name])


@pytest.mark.parametrize("name", ["lite1", "lite2"])
def test_lite1_and_lite2_see_espresso_at_224(name: str) -> None:
    m = load_model(name)
    assert isinstance(m, OnnxClassifier)
    assert m.input_shape == (3, 224, 224)  # resized to 240 / 260 inside the model
    assert m.family == "efficientnet-lite"
    p = m(load_image(bundled_photos()["coffee"])[None])[0]
    assert int(p.argmax()) == ESPRESSO


def test_all_surrogates_of_lite0_are_lite1_lite2_and_squeezenet() -> None:
    target = load_model("lite0")
    sur = resolve_surrogates(["all"], target)
    assert [s.name for s in sur] == ["lite1", "lite2", "squeezenet"]
    assert len({s.weights_id for s in sur} | {target.weights_id}) == 4


def test_a_surrogate_guided_attack_fools_lite0_in_a_few_queries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # camera -> Egyptian cat (285): a Lite1+Lite2 candidate does it (measured: 4 queries in
    # all with one torch thread, 3 with two: the float sums differ).
    out = tmp_path / "o"
    argv = ["attack", photo("camera"), "--target", "285", "--surrogate", "all"]
    argv += ["--max-queries", "50", "--json", "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["attack"] == "transfer"  # --surrogate without --attack: the guided default
    assert doc["success"]
    assert doc["queries"] <= 10
    assert doc["queries_by_kind"]["transfer"] == doc["queries"] - 2  # the clean and final queries
    assert doc["surrogates"]["same_family"] is True
    assert [s["name"] for s in doc["surrogates"]["surrogates"]] == ["lite1", "lite2", "squeezenet"]
    adv = load_image(out / "adv.png")
    assert int(load_model("lite0")(adv[None])[0].argmax()) == 285
    assert np.abs(adv - load_image(photo("camera"))).max() <= 0.05 + 1e-6


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--surrogate", "lite0"], "target's weights"),
        (["--model", "lite2", "--surrogate", "lite2"], "target's weights"),
        (["--surrogate", "lite1", "--attack", "square"], "does not use surrogates"),
        (["--attack", "transfer"], "surrogate-guided"),
        (["--surrogate", "nosuch.module:fn"], "--surrogate nosuch.module:fn"),
        (["--model", "lite7"], "unknown model"),
    ],
)
def test_bad_surrogates_exit_2_before_any_query(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "o"
    argv = ["attack", photo("camera"), "--target", "285", "--out", str(out), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_models_lists_the_four_builtin_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--no-speed", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["lite0", "lite1", "lite2", "squeezenet"]
    assert [r["family"] for r in rows] == 3 * ["efficientnet-lite"] + ["squeezenet"]
    assert [r["native_size"] for r in rows] == [224, 240, 260, 227]
