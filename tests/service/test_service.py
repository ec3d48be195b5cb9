"""The label service as a client sees it: a real uvicorn server on 127.0.0.1, spoken to with
httpx. A fake classifier (its classes follow the mean colour) keeps the calls fast; one test
runs the built-in ImageNet model."""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from PIL import Image

from bbattack import CallableClassifier, Classifier, bundled_photos, imagenet_classes, load_model
from bbattack.service import create_app
from bbattack.service.runner import serve_in_thread as live

KEY = "test-key-alpha-0001"
OTHER_KEY = "test-key-bravo-0002"
GOLDEN_RETRIEVER, TABBY, ESPRESSO = 207, 281, 967
ANNOTATE = "/v1/images:annotate"
MAX_BODY = 256 * 1024
LABEL_FIELDS = {"mid", "description", "score", "topicality"}


@dataclass
class ColourModel:
    """Logits 10 x mean red / green / blue for golden retriever / tabby / espresso, 0 for the
    other 997 classes; records the batch size of every forward pass."""

    batches: list[int] = field(default_factory=list)

    def __call__(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        self.batches.append(len(x))
        m = x.mean(axis=(2, 3))
        z = np.zeros((len(x), 1000), np.float32)
        z[:, GOLDEN_RETRIEVER], z[:, TABBY], z[:, ESPRESSO] = (
            10 * m[:, 0],
            10 * m[:, 1],
            10 * m[:, 2],
        )
        return z


def colour_classifier(fn: ColourModel) -> CallableClassifier:
    return CallableClassifier(
        fn, (3, 224, 224), 1000, class_names=imagenet_classes(), name="fake-colour"
    )


@dataclass
class Live:
    url: str
    app: FastAPI
    model: ColourModel
    client: httpx.Client

    def annotate(self, body: Any, key: str | None = KEY, **kw: Any) -> httpx.Response:
        params = {"key": key} if key is not None else {}
        return self.client.post(f"{self.url}{ANNOTATE}", params=params, json=body, **kw)

    def usage(self, key: str = KEY) -> int:
        return int(self.app.state.usage.get(key, 0))


@contextmanager
def started(**options: Any) -> Iterator[Live]:
    fn = ColourModel()
    kw: dict[str, Any] = {"api_keys": [KEY, OTHER_KEY], "max_body_bytes": MAX_BODY}
    app = create_app(colour_classifier(fn), **(kw | options))
    with live(app) as url, httpx.Client(timeout=30) as client:
        yield Live(url, app, fn, client)


@pytest.fixture(scope="module")
def server() -> Iterator[Live]:
    with started() as s:
        yield s


def png(rgb: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def label_request(data: bytes, max_results: int | None = None) -> dict[str, Any]:
    feature: dict[str, Any] = {"type": "LABEL_DETECTION"}
    if max_results is not None:
        feature["maxResults"] = max_results
    return {"image": {"content": b64(data)}, "features": [feature]}


RED, GREEN, BLUE = png((255, 0, 0)), png((0, 255, 0)), png((0, 0, 255))


def descriptions(entry: dict[str, Any]) -> list[str]:
    return [a["description"] for a in entry["labelAnnotations"]]


def assert_google_error(r: httpx.Response, code: int, status: str) -> dict[str, Any]:
    assert r.status_code == code, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    err: dict[str, Any] = body["error"]
    assert err["code"] == code
    assert err["status"] == status
    assert isinstance(err["message"], str)
    assert err["message"]
    return err


# --- labels -------------------------------------------------------------------------------


def test_a_batch_of_images_gets_labels_in_order(server: Live) -> None:
    before = server.usage()
    r = server.annotate({"requests": [label_request(c, 50) for c in (RED, GREEN, BLUE)]})
    assert r.status_code == 200, r.text
    responses = r.json()["responses"]
    assert len(responses) == 3
    for entry in responses:
        assert set(entry) == {"labelAnnotations"}
        labels = entry["labelAnnotations"]
        assert all(set(a) == LABEL_FIELDS for a in labels)
        assert all(a["mid"].startswith("/wn/n") for a in labels)
        ranks = [a["topicality"] for a in labels]
        assert ranks == sorted(ranks, reverse=True)
        assert all(0 < a["topicality"] <= a["score"] and 0.2 <= a["score"] <= 1 for a in labels)
        assert len(set(descriptions(entry))) == len(labels)
    red, green, blue = ({d.lower() for d in descriptions(e)} for e in responses)
    assert {"golden retriever", "dog", "animal"} <= red
    assert {"tabby cat", "cat"} <= green
    assert {"espresso", "coffee", "beverage"} <= blue
    assert "dog" not in green
    assert "cat" not in red
    assert all(d[0].isupper() for e in responses for d in descriptions(e))
    assert server.usage() - before == 3


def test_max_results_limits_each_image(server: Live) -> None:
    r = server.annotate({"requests": [label_request(RED, 2), label_request(RED)]})
    assert r.status_code == 200
    short, default = r.json()["responses"]
    assert len(short["labelAnnotations"]) == 2
    assert len(default["labelAnnotations"]) == 10  # Cloud Vision's default maxResults
    assert short["labelAnnotations"] == default["labelAnnotations"][:2]


def test_all_images_of_a_call_go_through_one_forward_pass(server: Live) -> None:
    server.model.batches.clear()
    r = server.annotate({"requests": [label_request(c) for c in (RED, GREEN, BLUE, RED, BLUE)]})
    assert r.status_code == 200
    assert server.model.batches == [5]


def test_the_key_may_come_as_a_header(server: Live) -> None:
    before = server.usage(OTHER_KEY)
    r = server.client.post(
        f"{server.url}{ANNOTATE}",
        headers={"X-Goog-Api-Key": OTHER_KEY},
        json={"requests": [label_request(GREEN)]},
    )
    assert r.status_code == 200
    assert "Cat" in descriptions(r.json()["responses"][0])
    assert server.usage(OTHER_KEY) - before == 1


def test_concurrent_calls_are_all_billed(server: Live) -> None:
    before = server.usage()
    statuses: list[int] = []

    def work() -> None:
        with httpx.Client(timeout=30) as c:
            for _ in range(4):
                r = c.post(
                    f"{server.url}{ANNOTATE}",
                    params={"key": KEY},
                    json={"requests": [label_request(RED), label_request(BLUE)]},
                )
                statuses.append(r.status_code)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 24
    assert server.usage() - before == 48


# --- per-image errors ---------------------------------------------------------------------


def test_bad_images_get_an_error_entry_and_are_not_billed(server: Live) -> None:
    before = server.usage()
    body = {
        "requests": [
            label_request(b"this is not an image"),
            label_request(BLUE),
            label_request(b""),
            label_request(png((0, 0, 255))[:60]),  # a truncated PNG
        ]
    }
    r = server.annotate(body)
    assert r.status_code == 200
    bad, good, empty, truncated = r.json()["responses"]
    for entry in (bad, empty, truncated):
        assert entry == {"error": {"code": 3, "message": "Bad image data."}}
    assert "Espresso" in descriptions(good)
    assert server.usage() - before == 1


def test_entries_without_label_detection_or_image_get_an_error(server: Live) -> None:
    before = server.usage()
    body = {
        "requests": [
            {"image": {"content": b64(RED)}, "features": [{"type": "FACE_DETECTION"}]},
            {"image": {"content": b64(RED)}},
            {"features": [{"type": "LABEL_DETECTION"}]},
            {
                "image": {"source": {"imageUri": "http://x/y.png"}},
                "features": [{"type": "LABEL_DETECTION"}],
            },
            label_request(RED),
        ]
    }
    r = server.annotate(body)
    assert r.status_code == 200
    face, nofeature, noimage, remote, ok = r.json()["responses"]
    assert face["error"]["code"] == 12
    assert "FACE_DETECTION" in face["error"]["message"]
    assert nofeature["error"]["code"] == 3
    assert noimage["error"]["code"] == 3
    assert remote["error"]["code"] == 3
    assert "image.content" in remote["error"]["message"]
    assert "Dog" in descriptions(ok)
    assert server.usage() - before == 1


# --- whole-call errors --------------------------------------------------------------------


def test_no_key_is_permission_denied(server: Live) -> None:
    r = server.annotate({"requests": [label_request(RED)]}, key=None)
    err = assert_google_error(r, 403, "PERMISSION_DENIED")
    assert err["message"] == "The request is missing a valid API key."


@pytest.mark.parametrize("key", ["wrong-key", KEY + "x", KEY[:-1], "ü-€-not-ascii"])
def test_a_wrong_key_is_invalid_argument_like_google(server: Live, key: str) -> None:
    before = server.usage()
    r = server.annotate({"requests": [label_request(RED)]}, key=key)
    err = assert_google_error(r, 400, "INVALID_ARGUMENT")
    assert err["message"] == "API key not valid. Please pass a valid API key."
    assert err["details"][0]["reason"] == "API_KEY_INVALID"
    assert server.usage() == before


def test_a_wrong_header_key_wins_over_a_good_query_key(server: Live) -> None:
    r = server.client.post(
        f"{server.url}{ANNOTATE}",
        params={"key": KEY},
        headers={"X-Goog-Api-Key": "wrong"},
        json={"requests": [label_request(RED)]},
    )
    assert_google_error(r, 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"requests": [', "Invalid JSON payload"),
        (b"[1, 2, 3]", "JSON object"),
        (b'{"requests": [{"image": {"content": "@@not base64@@"}}]}', "Base64 decoding failed"),
        (b'{"requests": [{"image": {"content": "abcde"}}]}', "requests[0].image.content"),
        (b'{"requests": [{"imagex": {}}]}', 'Unknown name "imagex"'),
        (b'{"requests": [{"features": [{"type": "NOPE"}]}]}', "requests[0].features[0].type"),
        (b'{"requests": [{"features": [{"maxResults": -1}]}]}', "maxResults"),
        (b'{"requests": {}}', "requests"),
        (b"{}", "requests"),
        (b'{"requests": []}', "at least one"),
        (b"", "body"),
    ],
)
def test_malformed_calls_are_invalid_argument(server: Live, body: bytes, needle: str) -> None:
    before = server.usage()
    r = server.client.post(
        f"{server.url}{ANNOTATE}",
        params={"key": KEY},
        content=body,
        headers={"content-type": "application/json"},
    )
    err = assert_google_error(r, 400, "INVALID_ARGUMENT")
    assert needle in err["message"]
    assert server.usage() == before


def test_bad_base64_anywhere_fails_the_whole_call(server: Live) -> None:
    before = server.usage()
    body = {"requests": [label_request(RED), {"image": {"content": "%%%"}}]}
    err = assert_google_error(server.annotate(body), 400, "INVALID_ARGUMENT")
    assert "requests[1].image.content" in err["message"]
    assert server.usage() == before


def test_url_safe_unpadded_base64_is_accepted(server: Live) -> None:
    content = base64.urlsafe_b64encode(RED).decode().rstrip("=")
    body = {
        "requests": [{"image": {"content": content}, "features": [{"type": "LABEL_DETECTION"}]}]
    }
    r = server.annotate(body)
    assert r.status_code == 200
    assert "Dog" in descriptions(r.json()["responses"][0])


def test_more_than_16_images_is_invalid_argument(server: Live) -> None:
    r = server.annotate({"requests": [label_request(RED)] * 17})
    err = assert_google_error(r, 400, "INVALID_ARGUMENT")
    assert "16" in err["message"]


def test_an_oversized_body_is_413(server: Live) -> None:
    before = server.usage()
    big = {"requests": [label_request(png((1, 2, 3)) + b"\0" * MAX_BODY)]}
    err = assert_google_error(server.annotate(big), 413, "INVALID_ARGUMENT")
    assert str(MAX_BODY) in err["message"]
    assert server.usage() == before


def test_an_oversized_chunked_body_is_413(server: Live) -> None:
    # No Content-Length: the limit has to hold on the bytes actually read.
    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b" " * (MAX_BODY // 4)

    r = server.client.post(
        f"{server.url}{ANNOTATE}",
        params={"key": KEY},
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert "content-length" not in r.request.headers
    assert_google_error(r, 413, "INVALID_ARGUMENT")


def test_deeply_nested_json_is_invalid_argument(server: Live) -> None:
    r = server.client.post(
        f"{server.url}{ANNOTATE}",
        params={"key": KEY},
        content=b'{"requests": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        headers={"content-type": "application/json"},
    )
    assert_google_error(r, 400, "INVALID_ARGUMENT")


def test_unknown_paths_and_methods_get_google_errors(server: Live) -> None:
    assert_google_error(server.client.get(f"{server.url}/nowhere"), 404, "NOT_FOUND")
    r = server.client.get(f"{server.url}{ANNOTATE}", params={"key": KEY})
    assert_google_error(r, 405, "UNIMPLEMENTED")


# --- quota and rate limit -----------------------------------------------------------------


def test_the_quota_counts_images_per_key() -> None:
    with started(quota=3) as s:
        # An image that does not decode is refunded: it does not eat the quota.
        r = s.annotate({"requests": [label_request(RED), label_request(b"junk")]})
        assert r.status_code == 200
        assert s.usage() == 1
        r = s.annotate({"requests": [label_request(RED)] * 3})
        err = assert_google_error(r, 429, "RESOURCE_EXHAUSTED")
        assert int(r.headers["retry-after"]) > 0
        assert "quota" in err["message"].lower()
        assert err["details"][0]["reason"] == "QUOTA_EXCEEDED"
        assert s.usage() == 1  # a refused call bills nothing
        assert s.annotate({"requests": [label_request(RED)] * 2}).status_code == 200
        assert_google_error(
            s.annotate({"requests": [label_request(RED)]}), 429, "RESOURCE_EXHAUSTED"
        )
        assert s.annotate({"requests": [label_request(RED)] * 3}, key=OTHER_KEY).status_code == 200
        assert s.app.state.usage == {KEY: 3, OTHER_KEY: 3}


def test_the_rate_limit_answers_429_with_retry_after() -> None:
    with started(rate=0.5, burst=2) as s:
        ok = [s.annotate({"requests": [label_request(RED)]}).status_code for _ in range(2)]
        assert ok == [200, 200]
        r = s.annotate({"requests": [label_request(RED)]})
        err = assert_google_error(r, 429, "RESOURCE_EXHAUSTED")
        assert err["details"][0]["reason"] == "RATE_LIMIT_EXCEEDED"
        assert 1 <= int(r.headers["retry-after"]) <= 2
        assert s.usage() == 2
        # Buckets are per key: the other key still has its burst.
        assert s.annotate({"requests": [label_request(RED)]}, key=OTHER_KEY).status_code == 200


# --- health, docs, logs -------------------------------------------------------------------


def test_health_docs_and_openapi(server: Live) -> None:
    r = server.client.get(f"{server.url}/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "model": "fake-colour"}
    docs = server.client.get(f"{server.url}/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    spec = server.client.get(f"{server.url}/openapi.json").json()
    op = spec["paths"][ANNOTATE]["post"]
    assert {"200", "400", "403", "413", "429"} <= set(op["responses"])
    schemas = spec["components"]["schemas"]
    assert "maxResults" in schemas["Feature"]["properties"]
    assert "labelAnnotations" in schemas["AnnotateImageResponse"]["properties"]


def test_each_call_logs_one_json_line_with_a_redacted_key(caplog: pytest.LogCaptureFixture) -> None:
    key = "logkey-3141592653"
    mine = key[:4] + "…"

    def lines() -> list[dict[str, Any]]:
        # Only this server's key: another server's last line may still be on its way.
        out = [
            json.loads(r.getMessage())
            for r in caplog.records
            if r.name == "bbattack.service.access"
        ]
        return [d for d in out if d["key"] == mine]

    with (
        caplog.at_level(logging.INFO, logger="bbattack.service.access"),
        started(api_keys=[key]) as s,
    ):
        s.annotate({"requests": [label_request(RED), label_request(BLUE)]}, key=key)
        s.annotate({"requests": []}, key=key)
        deadline = time.monotonic() + 5
        while len(lines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # the line is written after the response, in the server thread
    ok, bad = lines()
    assert ok["method"] == "POST"
    assert ok["path"] == ANNOTATE
    assert (ok["status"], ok["images"], bad["status"], bad["images"]) == (200, 2, 400, 0)
    assert isinstance(ok["latency_ms"], float)
    assert ok["latency_ms"] >= 0
    assert key not in caplog.text


# --- fuzz ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
field_values = st.one_of(
    json_values,
    st.sampled_from(["LABEL_DETECTION", "FACE_DETECTION", "", "QUJD", "AAAA", b64(RED), "-_-_"]),
)
images = st.fixed_dictionaries({}, optional={"content": field_values, "source": json_values})
features = st.fixed_dictionaries(
    {}, optional={"type": field_values, "maxResults": field_values, "model": field_values}
)
entries = st.fixed_dictionaries(
    {},
    optional={
        "image": images | json_values,
        "features": st.lists(features, max_size=3) | json_values,
    },
)
near_valid = st.fixed_dictionaries({"requests": st.lists(entries, max_size=4) | json_values})


def assert_no_server_error(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text
    body = r.json()
    if r.status_code == 200:
        assert len(body["responses"]) >= 1
    else:
        assert body["error"]["code"] == r.status_code


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=json_values | near_valid)
def test_fuzzed_json_never_causes_a_server_error(server: Live, body: Any) -> None:
    assert_no_server_error(server.annotate(body))


@settings(max_examples=60, deadline=None)
@given(
    raw=st.binary(max_size=300),
    content_type=st.sampled_from(["application/json", "text/plain", ""]),
)
def test_fuzzed_bytes_never_cause_a_server_error(
    server: Live, raw: bytes, content_type: str
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    r = server.client.post(
        f"{server.url}{ANNOTATE}", params={"key": KEY}, content=raw, headers=headers
    )
    assert_no_server_error(r)


@settings(max_examples=80, deadline=None)
@given(data=st.binary(max_size=200), keep=st.integers(0, 200))
def test_fuzzed_image_bytes_never_cause_a_server_error(
    server: Live, data: bytes, keep: int
) -> None:
    # Random bytes, and real PNG/JPEG headers followed by noise.
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(jpeg, format="JPEG")
    body = {
        "requests": [
            label_request(d) for d in (data, RED[:keep] + data, jpeg.getvalue()[:keep] + data)
        ]
    }
    r = server.annotate(body)
    assert r.status_code == 200
    for entry in r.json()["responses"]:
        assert set(entry) <= {"labelAnnotations", "error"}


# --- the real model -----------------------------------------------------------------------


@pytest.mark.imagenet
def test_the_builtin_model_labels_coffee() -> None:
    model: Classifier = load_model(batch_size=8)  # an explicit batch size skips tuning
    app = create_app(model, api_keys=[KEY])
    with live(app) as url, httpx.Client(timeout=60) as client:
        photo = bundled_photos()["coffee"].read_bytes()
        r = client.post(
            f"{url}{ANNOTATE}", params={"key": KEY}, json={"requests": [label_request(photo, 20)]}
        )
    assert r.status_code == 200, r.text
    labels = r.json()["responses"][0]["labelAnnotations"]
    names = [a["description"].lower() for a in labels]
    assert any(w in n for n in names[:6] for w in ("espresso", "coffee", "cup"))
    assert {"beverage", "food"} & set(names)  # a coarser WordNet ancestor
    score = dict(zip(names, (a["score"] for a in labels), strict=True))
    assert score["beverage"] >= score["espresso"] > 0.5
    assert app.state.usage == {KEY: 1}
