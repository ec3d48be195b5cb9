"""``--threat ql`` over ``bbattack attack --endpoint``: the score vector of a label API that
lists every class (Hugging Face's ``top_k``), taken from its answers and nothing else. A
schema that cannot list every class is refused before any query; an answer that leaves a
class out stops the run, billed, rather than hand the attack a made-up score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from wire_support import KEYS, billed_key, colour_classifier, serving

from bbattack.cli import main
from bbattack.images import bundled_photos, load_image
from bbattack.oracle import Oracle, QueryKind, Scores, ScoresObservation
from bbattack.remote import HttpLabelTarget
from bbattack.targets.every_class import EveryClassTarget

HF_PATH = "/models/colour"


def test_the_score_vector_is_the_models_own_softmax_by_label(astronaut: str) -> None:
    x = load_image(astronaut)[None]
    model = colour_classifier()
    names = [c.name for c in model.class_names.classes] if model.class_names else []
    with serving("hf") as s, HttpLabelTarget(
        s.url + HF_PATH, KEYS["hf"][0], "hf", max_results=1000,
        schema_options={"every_class": True},
    ) as client:  # fmt: skip
        target = EveryClassTarget(client, 1000)
        oracle = Oracle(target, Scores(), max_queries=5)
        obs = oracle.query(x, oracle.register(1), QueryKind.INIT)
        assert s.usage(billed_key("hf")) == 1
    assert isinstance(obs, ScoresObservation)
    want = model(np.rint(x * 255) / 255)[0]  # probabilities of the 8-bit image sent
    vocab = target.class_names
    by_label: dict[int, float] = {}
    for i, name in enumerate(names):  # two ImageNet classes share a name: one label, summed
        by_label[vocab.resolve(name)] = by_label.get(vocab.resolve(name), 0.0) + float(want[i])
    got = obs.probs[0]
    assert len(vocab) == len(set(n.casefold() for n in names)) == 998
    np.testing.assert_allclose([got[c] for c in by_label], list(by_label.values()), atol=1e-6)
    assert got[len(vocab) :].tolist() == [0.0, 0.0]  # slots no label named: no score made up
    assert vocab.name(int(obs.top1()[0])) == names[int(want.argmax())]


@pytest.mark.parametrize("schema", ["gcv", "rekognition", "azure", "clarifai"])
def test_ql_is_refused_where_the_api_cannot_list_every_class(
    schema: str, astronaut: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    with serving(schema) as s:
        argv = ["attack", astronaut, "--endpoint", s.url, "--schema", schema]
        argv += ["--api-key", KEYS[schema][0], "--threat", "ql", "--untargeted"]
        assert main([*argv, "--out", str(out)]) == 2
        assert s.usage(billed_key(schema)) == 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cannot list every class" in err
    assert "--schema hf" in err
    assert not out.exists()


def test_json_schema_is_refused_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["attack", str(bundled_photos().get("astronaut", "x.png")), "--threat", "ql"]
    argv += ["--endpoint", "http://127.0.0.1:9/", "--schema", "json", "--api-key", "k"]
    argv += ["--labels-path", "[*].label", "--scores-path", "[*].score", "--untargeted"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert "cannot list every class" in capsys.readouterr().err


@pytest.mark.parametrize("given", [[], ["--max-results", "1"]])
def test_ql_over_hf_needs_the_number_of_classes_before_any_query(
    given: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No server listens on port 9: the refusal comes before any connection.
    argv = ["attack", str(bundled_photos().get("astronaut", "x.png")), "--threat", "ql"]
    argv += ["--endpoint", "http://127.0.0.1:9/m", "--schema", "hf", "--api-key", "k"]
    assert main([*argv, "--untargeted", *given, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "give --max-results N" in err
    assert not (tmp_path / "run").exists()


def test_an_answer_that_leaves_classes_out_stops_the_run_billed(
    astronaut: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    with serving("hf") as s:
        argv = ["attack", astronaut, "--endpoint", s.url + HF_PATH, "--schema", "hf"]
        argv += ["--api-key", KEYS["hf"][0], "--threat", "ql", "--untargeted"]
        argv += ["--max-results", "10", "--out", str(out)]  # the model has 1,000 classes
        assert main(argv) == 3
        billed = s.usage(billed_key("hf"))
    assert "left classes out" in capsys.readouterr().err
    doc = json.loads((out / "result.json").read_text())
    assert doc["stop_reason"] == "remote_error"
    assert billed == 1 == doc["remote"]["lost_billed"]  # answered, billed, never used
    assert doc["remote"]["paid_queries"] == 0
