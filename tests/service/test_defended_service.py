"""``bbattack serve --defense``: a defence in front of the served model for every schema. A
refusal is each API's own 4xx (never 429), billed; bbattack's client reads it as a refusal that
is not retried (QueryRejected, KeyBanned); a plain attack stops on it with stop reason
``rejected``, and what the service billed = what result.json paid = the journal's rows."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image
from wire_support import KEYS, Served, call, colour_classifier, serving

from bbattack.cli import main
from bbattack.defenses import Blacklight
from bbattack.errors import KeyBanned, QueryRejected
from bbattack.oracle import Journal, Oracle, QueryKind, TopK
from bbattack.remote import HttpLabelTarget
from bbattack.service import create_app
from bbattack.service.runner import serve_in_thread
from bbattack.targets import LabelTarget

SCHEMAS = ["gcv", "rekognition", "azure", "clarifai", "hf"]
# Where each schema's calls go, past the base URL (the client completes the others).
PATHS = {"clarifai": "/v2/users/u/apps/a/models/m/outputs", "hf": "/models/colour"}


def _fast() -> Blacklight:
    # The vectorised window hash: the same selection statistics, 10x faster than SHA-256.
    return Blacklight(hash="mix64", window=50)


def noise(seed: int) -> NDArray[np.float32]:
    """A 64 x 64 photo-like image on the 8-bit grid: no two seeds share fingerprints."""
    u8 = np.random.default_rng(seed).integers(0, 256, (1, 3, 64, 64), dtype=np.uint8)
    return (u8 / np.float32(255.0)).astype(np.float32)


def png(x: NDArray[np.float32]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.rint(x[0].transpose(1, 2, 0) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def billed_as(schema: str, key: str) -> str:
    return key.split(":")[0] if schema == "rekognition" else key


def refusal_form(r: httpx.Response, schema: str) -> tuple[int, str]:
    """(HTTP status, the code the schema's error body names the refusal by)."""
    body = r.json()
    if schema == "gcv":
        return r.status_code, body["error"]["details"][0]["reason"]
    if schema == "rekognition":
        assert r.headers["x-amzn-ErrorType"] == body["__type"]
        return r.status_code, body["__type"]
    if schema == "azure":
        return r.status_code, body["error"]["innererror"]["code"]
    if schema == "clarifai":
        return r.status_code, str(body["status"]["code"])
    return r.status_code, body["error_type"]


REJECTED = {
    "gcv": (400, "QUERY_REJECTED"),
    "rekognition": (400, "QueryRejectedException"),
    "azure": (400, "QueryRejected"),
    "clarifai": (400, "11200"),
    "hf": (400, "query_rejected"),
}
BANNED = {
    "gcv": (403, "KEY_BANNED"),
    "rekognition": (400, "KeyBannedException"),
    "azure": (403, "KeyBanned"),
    "clarifai": (403, "11201"),
    "hf": (403, "key_banned"),
}


@pytest.mark.parametrize("schema", SCHEMAS)
def test_a_refusal_is_the_schemas_own_4xx_and_billed(schema: str) -> None:
    with serving(schema, defenses=[_fast()]) as s:
        key = KEYS[schema][0]
        assert call(s, png(noise(1))).status_code == 200
        again = call(s, png(noise(1)))  # the same query again: flagged
        assert refusal_form(again, schema) == REJECTED[schema]
        assert again.status_code != 429  # a client would retry a 429 for ever
        # Account-oblivious: another key asking the same is refused too; a new image is not.
        assert call(s, png(noise(1)), KEYS[schema][1]).status_code == REJECTED[schema][0]
        assert call(s, png(noise(2))).status_code == 200
        assert s.usage(billed_as(schema, key)) == 3  # the refused call was paid for
        assert s.app.state.defenses[0].rejected == 2
    if schema == "gcv":
        assert again.json()["error"]["status"] == "FAILED_PRECONDITION"


@pytest.mark.parametrize("schema", SCHEMAS)
def test_a_banned_key_is_refused_from_then_on_and_only_that_key(schema: str) -> None:
    with serving(schema, defenses=[Blacklight(hash="mix64", window=50, action="ban")]) as s:
        one, two = KEYS[schema]
        assert call(s, png(noise(1))).status_code == 200
        assert refusal_form(call(s, png(noise(1))), schema) == BANNED[schema]
        assert refusal_form(call(s, png(noise(2))), schema) == BANNED[schema]  # a new image too
        assert call(s, png(noise(3)), two).status_code == 200  # bans are per key
        assert s.usage(billed_as(schema, one)) == 3
        assert s.usage(billed_as(schema, two)) == 1


def _client(s: Served) -> HttpLabelTarget:
    key = KEYS[s.schema][0]
    url = s.url + PATHS.get(s.schema, "")
    return HttpLabelTarget(
        url, key, s.schema, max_retries=3, sleep=lambda _s: None, input_shape=(3, 64, 64)
    )


@pytest.mark.parametrize("schema", SCHEMAS)
def test_the_client_reads_each_schemas_refusal_and_does_not_retry_it(schema: str) -> None:
    x = noise(4)
    near = x.copy()
    near[0, 0, 0, 0] = 1.0 - near[0, 0, 0, 0]  # one pixel off: a new query, flagged
    with serving(schema, defenses=[_fast()]) as s, _client(s) as client:
        assert client.annotate(x)
        with pytest.raises(QueryRejected) as refused:
            client.annotate(near)
        assert not isinstance(refused.value, KeyBanned)
        assert client.retries == 0
        assert client.paid_queries == 2 == s.usage(billed_as(schema, KEYS[schema][0]))
    ban = Blacklight(hash="mix64", window=50, action="ban")
    with serving(schema, defenses=[ban]) as s, _client(s) as client:
        client.annotate(x)
        with pytest.raises(KeyBanned):
            client.annotate(near)
        assert client.retries == 0


def test_a_remote_refusal_reaches_the_attack_as_query_rejected_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    """What an adaptive attack relies on (it catches QueryRejected and redraws): through the
    oracle and its journal, a remote refusal is QueryRejected, kept on the journal's tape as
    refused, and the next query is answered; every query is billed once and journalled once."""
    x = noise(5)
    near = x.copy()
    near[0, 1, 2, 3] = 1.0 - near[0, 1, 2, 3]
    with serving("gcv", defenses=[_fast()]) as s, _client(s) as client:
        with Journal(tmp_path / "j.sqlite") as journal:
            oracle = Oracle(LabelTarget(client), TopK(5), journal=journal)
            ids = oracle.register(1)
            oracle.query(x, ids, QueryKind.INIT)
            with pytest.raises(QueryRejected):
                oracle.query(near, ids, QueryKind.LINE_SEARCH)
            assert len(oracle.query(noise(6), ids, QueryKind.LINE_SEARCH)) == 1
            stats = journal.stats()
        billed = s.usage(KEYS["gcv"][0])
    assert billed == 3 == oracle.total_queries == client.paid_queries
    assert (stats.paid, stats.refused, stats.last_seq) == (2, 1, 3)


def test_a_plain_attack_is_rejected_within_a_few_dozen_queries_and_billed_as_paid(
    astronaut: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "defended-key-0001"
    app = create_app(colour_classifier(), api_keys=[key], defenses=[_fast()])
    out = tmp_path / "run"
    with serve_in_thread(app) as url:
        rc = main(
            [
                *["attack", astronaut, "--endpoint", url, "--api-key", key, "--out", str(out)],
                *["--untargeted", "--threat", "lo", "--attack", "rays", "--eps", "0.01"],
                *["--max-queries", "300"],
            ]
        )
    assert rc == 3, capsys.readouterr().err  # stopped by its target, as on any 4xx
    assert "(rejected)" in capsys.readouterr().err
    doc = json.loads((out / "result.json").read_text())
    assert doc["stop_reason"] == "rejected"
    assert doc["queries"] <= 48  # the first few dozen
    with sqlite3.connect(out / "journal.sqlite") as db:
        rows = dict(db.execute("SELECT status, COUNT(*) FROM queries GROUP BY status").fetchall())
    assert rows["refused"] == 1 == app.state.defenses[0].rejected
    billed = int(app.state.usage[key])
    paid = doc["remote"]["paid_queries"]
    assert (
        billed == paid == rows["paid"] + rows["refused"] == doc["queries"] - rows.get("journal", 0)
    )
    assert doc["remote"]["refused"] == 1
    assert main(["replay", str(out)]) == 0, capsys.readouterr().err  # the refusal replays
