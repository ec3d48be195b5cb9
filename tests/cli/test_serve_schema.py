"""`bbattack serve --schema`: the schema reaches the service, and a bad one or a Rekognition
key without its secret is one line and exit 2, before the model loads."""

from __future__ import annotations

from typing import Any

import pytest

import bbattack.service
from bbattack.cli import main


@pytest.mark.parametrize("schema", ["gcv", "rekognition", "azure", "clarifai", "hf"])
def test_serve_passes_the_schema_on(schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_serve(host: str, port: int, **kw: Any) -> None:
        seen.update(kw, host=host, port=port)

    monkeypatch.setattr(bbattack.service, "serve", fake_serve)
    assert main(["serve", "--schema", schema, "--port", "0", "--api-key", "AKID:SECRET"]) == 0
    assert seen["schema"] == schema
    assert seen["api_keys"] == ["AKID:SECRET"]


def test_serve_without_a_schema_is_google(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(bbattack.service, "serve", lambda host, port, **kw: seen.update(kw))
    assert main(["serve", "--port", "0", "--api-key", "k"]) == 0
    assert seen["schema"] == "gcv"


def test_a_rekognition_key_without_its_secret_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_model(**kw: Any) -> None:
        raise AssertionError("the model must not load")

    monkeypatch.setattr("bbattack.models.load_model", no_model)
    assert main(["serve", "--schema", "rekognition", "--port", "0", "--api-key", "k"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "ACCESS_KEY_ID:SECRET" in err


def test_an_unknown_schema_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--schema", "nope", "--port", "0", "--api-key", "k"]) == 2
    assert "nope" in capsys.readouterr().err
