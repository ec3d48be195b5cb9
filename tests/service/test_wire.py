"""Every wire schema as a client sees it (httpx on loopback): labels, each API's own errors for
keys, rate limits, quotas and bad input, its images-per-call and size limits, fault injection
in its own error form, /healthz, and billing (one labelled image, one unit)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx
import pytest
from wire_support import (
    GREEN,
    KEYS,
    RED,
    Served,
    _b64,
    billed_key,
    call,
    colour_classifier,
    image,
    serving,
    signed,
)

from bbattack.errors import UserInputError
from bbattack.service import create_app
from bbattack.service.faults import FaultInjector

SCHEMAS = ("gcv", "rekognition", "azure", "clarifai", "hf")


def signal(schema: str, r: httpx.Response) -> tuple[int, str]:
    """(HTTP status, the API's own error name or code) of an error answer."""
    body: Any = r.json()
    if schema == "gcv":
        return r.status_code, body["error"]["status"]
    if schema == "rekognition":
        assert r.headers["x-amzn-errortype"] == body["__type"]
        assert isinstance(body["message"], str)
        return r.status_code, body["__type"]
    if schema == "azure":
        return r.status_code, body["error"]["code"]
    if schema == "clarifai":
        return r.status_code, str(body["status"]["code"])
    assert isinstance(body["error"], str)
    return r.status_code, "error"


def labels(schema: str, r: httpx.Response) -> list[str]:
    """The label names of a successful one-image answer, in order."""
    assert r.status_code == 200, r.text
    body: Any = r.json()
    if schema == "gcv":
        return [a["description"] for a in body["responses"][0]["labelAnnotations"]]
    if schema == "rekognition":
        return [a["Name"] for a in body["Labels"]]
    if schema == "azure":
        return [t["name"] for t in body["tagsResult"]["values"]]
    if schema == "clarifai":
        return [c["name"] for c in body["outputs"][0]["data"]["concepts"]]
    return [x["label"] for x in body]


MISSING = {
    "gcv": (403, "PERMISSION_DENIED"),
    "rekognition": (400, "MissingAuthenticationTokenException"),
    "azure": (401, "401"),
    "clarifai": (401, "11001"),
    "hf": (401, "error"),
}
WRONG = MISSING | {
    "gcv": (400, "INVALID_ARGUMENT"),
    "rekognition": (400, "UnrecognizedClientException"),
}
RATE = {
    "gcv": (429, "RESOURCE_EXHAUSTED"),
    "rekognition": (400, "ThrottlingException"),
    "azure": (429, "429"),
    "clarifai": (429, "11005"),
    "hf": (429, "error"),
}
QUOTA = {
    "gcv": (429, "RESOURCE_EXHAUSTED"),
    "rekognition": (400, "LimitExceededException"),
    "azure": (403, "403"),
    "clarifai": (402, "11004"),
    "hf": (402, "error"),
}


@pytest.mark.parametrize("schema", SCHEMAS)
def test_each_schema_labels_and_bills_one_image(schema: str) -> None:
    with serving(schema) as s:
        red, green = labels(schema, call(s, RED)), labels(schema, call(s, GREEN))
        assert s.usage(billed_key(schema)) == 2
        health = s.client.get(f"{s.url}/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "model": "fake-colour"}
    assert red[0].lower() == "golden retriever"
    assert green[0].lower() == "tabby" or "tabby" in green[0].lower()
    if schema not in ("hf",):
        assert "dog" in {n.lower() for n in red}  # a coarse label beside the fine one


@pytest.mark.parametrize("schema", SCHEMAS)
def test_keys_missing_or_wrong_get_the_apis_own_errors(schema: str) -> None:
    with serving(schema) as s:
        assert signal(schema, call(s, RED, key=None)) == MISSING[schema]
        wrong = "AKIDNOBODY:x" if schema == "rekognition" else "not-a-key"
        assert signal(schema, call(s, RED, key=wrong)) == WRONG[schema]
        assert s.app.state.usage == {}


@pytest.mark.parametrize("schema", SCHEMAS)
def test_the_rate_limit_in_each_apis_form(schema: str) -> None:
    with serving(schema, rate=0.5, burst=1) as s:
        assert call(s, RED).status_code == 200
        r = call(s, RED)
        assert signal(schema, r) == RATE[schema]
        if schema != "rekognition":  # AWS signals throttling in the body only
            assert int(r.headers["retry-after"]) >= 1
        assert s.usage(billed_key(schema)) == 1
        # Buckets are per key.
        assert call(s, RED, key=KEYS[schema][1]).status_code == 200


@pytest.mark.parametrize("schema", SCHEMAS)
def test_a_spent_quota_in_each_apis_form_bills_nothing(schema: str) -> None:
    with serving(schema, quota=1) as s:
        assert call(s, RED).status_code == 200
        assert signal(schema, call(s, RED)) == QUOTA[schema]
        assert s.usage(billed_key(schema)) == 1


@pytest.mark.parametrize("schema", SCHEMAS)
def test_injected_faults_come_in_each_apis_form_and_bill_nothing(schema: str) -> None:
    def wrap_429(app: Any) -> Any:
        return FaultInjector(app, rate=1.0, seed=0, kinds=["429"])

    with serving(schema, wrap=wrap_429) as s:
        r = call(s, RED)
        assert signal(schema, r) == RATE[schema]
        if schema != "rekognition":
            assert r.headers["retry-after"] == "0"
        assert s.client.get(f"{s.url}/healthz").status_code == 200  # only calls are faulted
    with serving(schema, wrap=lambda app: FaultInjector(app, rate=1.0, seed=0, kinds=["503"])) as s:
        r = call(s, RED)
        assert r.status_code == 503
        if schema == "hf":
            assert r.json()["estimated_time"] > 0
    with serving(
        schema, wrap=lambda app: FaultInjector(app, rate=1.0, seed=0, kinds=["truncated"])
    ) as s:
        r = call(s, RED)
        assert r.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            r.json()
        assert s.app.state.usage == {}


def test_gcv_takes_proto3_json_enums_numbers_and_nulls() -> None:
    with serving("gcv") as s:
        key = KEYS["gcv"][0]
        entry: dict[str, Any] = {
            "image": {"content": _b64(RED), "source": None},
            "features": [{"type": 4, "maxResults": "2", "model": None}],
        }
        r = s.client.post(
            f"{s.url}/v1/images:annotate?$alt=json;enum-encoding=int",
            json={"requests": [entry]},
            headers={"X-Goog-Api-Key": key},
        )
        assert len(labels("gcv", r)) == 2
        entry["features"] = [{"type": "4"}, {"type": "FACE_DETECTION", "maxResults": 3.0}]
        r = s.client.post(
            f"{s.url}/v1/images:annotate",
            json={"requests": [entry]},
            headers={"X-Goog-Api-Key": key},
        )
        assert labels("gcv", r)[0] == "Golden Retriever"
        entry["features"] = [{"type": 99}]
        r = s.client.post(
            f"{s.url}/v1/images:annotate",
            json={"requests": [entry]},
            headers={"X-Goog-Api-Key": key},
        )
        assert signal("gcv", r) == (400, "INVALID_ARGUMENT")
        assert "requests[0].features[0].type" in r.json()["error"]["message"]
        assert s.usage(key) == 2


def test_clarifai_takes_up_to_128_inputs_and_reports_bad_ones_per_output() -> None:
    with serving("clarifai") as s:
        assert len(call(s, RED, n=128).json()["outputs"]) == 128
        assert signal("clarifai", call(s, RED, n=129)) == (400, "11102")
        assert s.usage(billed_key("clarifai")) == 128
        inputs = [{"data": {"image": {"base64": _b64(d)}}} for d in (RED, b"junk")]
        r = s.client.post(
            f"{s.url}/v2/models/m/outputs",
            json={"inputs": inputs},
            headers={"Authorization": f"Key {KEYS['clarifai'][0]}"},
        )
        body = r.json()
        assert body["status"]["code"] == 10010
        assert [o["status"]["code"] for o in body["outputs"]] == [10000, 30300]
        assert s.usage(billed_key("clarifai")) == 129


def test_rekognition_refuses_bad_input_before_billing() -> None:
    with serving("rekognition") as s:
        gif = image((255, 0, 0), fmt="GIF")
        assert signal("rekognition", call(s, gif)) == (400, "InvalidImageFormatException")
        big = RED + b"\0" * (5 * 1024 * 1024)
        assert signal("rekognition", call(s, big)) == (400, "ImageTooLargeException")
        r = call(s, RED, MinConfidence=150)
        assert signal("rekognition", r) == (400, "InvalidParameterException")
        assert labels("rekognition", call(s, RED, MinConfidence=99.9)) == []
        assert s.usage(billed_key("rekognition")) == 1


def test_rekognition_refuses_a_stale_or_tampered_signature() -> None:
    akid, secret = KEYS["rekognition"][0].split(":")
    with serving("rekognition") as s:
        body = json.dumps({"Image": {"Bytes": _b64(RED)}}).encode()
        base = {
            "X-Amz-Target": "RekognitionService.DetectLabels",
            "Content-Type": "application/x-amz-json-1.1",
        }
        headers = signed(s.url, body, akid, secret, base)
        tampered = body.replace(b"}}", b'}, "MaxLabels": 1}')
        r = s.client.post(f"{s.url}/", content=tampered, headers=headers)
        assert signal("rekognition", r) == (400, "InvalidSignatureException")
        old = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).strftime("%Y%m%dT%H%M%SZ")
        stale = signed(s.url, body, akid, secret, base, stamp=old)
        r = s.client.post(f"{s.url}/", content=body, headers=stale)
        assert signal("rekognition", r) == (400, "InvalidSignatureException")
        assert "expired" in r.json()["message"]
        assert s.app.state.usage == {}


def test_rekognition_keys_must_name_a_secret() -> None:
    with pytest.raises(UserInputError, match="ACCESS_KEY_ID:SECRET"):
        create_app(colour_classifier(), api_keys=["no-secret"], schema="rekognition")
    with pytest.raises(UserInputError, match="unknown schema"):
        create_app(colour_classifier(), api_keys=["k"], schema="nope")


def test_azure_refuses_urls_other_features_and_tiny_images() -> None:
    key = {"Ocp-Apim-Subscription-Key": KEYS["azure"][0]}
    path = "/computervision/imageanalysis:analyze"
    with serving("azure") as s:
        r = s.client.post(
            f"{s.url}{path}",
            params={"api-version": "2023-10-01", "features": "tags"},
            json={"url": "https://example.com/x.jpg"},
            headers=key,
        )
        assert signal("azure", r) == (400, "InvalidRequest")
        r = s.client.post(
            f"{s.url}{path}",
            params={"api-version": "2023-10-01", "features": "caption"},
            content=RED,
            headers=key | {"Content-Type": "application/octet-stream"},
        )
        assert signal("azure", r) == (400, "InvalidRequest")
        tiny = image((255, 0, 0), size=(20, 20))
        r = call(s, tiny)
        assert signal("azure", r) == (400, "InvalidRequest")
        assert r.json()["error"]["innererror"]["code"] == "InvalidImageSize"
        assert signal("azure", call(s, b"\x89PNG not really")) == (400, "InvalidRequest")
        assert s.app.state.usage == {}


def test_hf_takes_json_with_top_k_and_refuses_urls() -> None:
    auth = {"Authorization": f"Bearer {KEYS['hf'][0]}"}
    with serving("hf") as s:
        r = s.client.post(
            f"{s.url}/", json={"inputs": _b64(RED), "parameters": {"top_k": 3}}, headers=auth
        )
        assert len(labels("hf", r)) == 3
        r = s.client.post(
            f"{s.url}/models/x", json={"inputs": "https://example.com/a.jpg"}, headers=auth
        )
        assert signal("hf", r) == (400, "error")
        r = s.client.post(f"{s.url}/models/x", content=b"junk", headers=auth)
        assert signal("hf", r) == (400, "error")
        assert s.usage(KEYS["hf"][0]) == 1


def test_served_s_identity() -> None:
    # The helper's billing identity is what the ledger uses.
    with serving("rekognition") as s:
        assert isinstance(s, Served)
        call(s, RED)
        assert set(s.app.state.usage) == {billed_key("rekognition")}


@pytest.mark.parametrize("schema", SCHEMAS)
def test_fuzzed_bodies_never_cause_a_server_error(schema: str) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=8,
    )
    with serving(schema) as s:

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        @given(raw=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
        def check(raw: bytes) -> None:
            r = call(s, RED)  # a well-formed call first: the server is up and billing
            assert r.status_code == 200
            data = raw if schema in ("azure", "hf") else RED
            r = call(s, data)
            assert r.status_code < 500, r.text
            if schema in ("gcv", "rekognition", "clarifai"):
                r = _raw_post(s, raw)
                assert r.status_code < 500, r.text
            r.json()  # every answer is JSON

        check()


def _raw_post(s: Served, raw: bytes) -> httpx.Response:
    """``raw`` as the body of a correctly authenticated call of ``s``'s schema."""
    key = KEYS[s.schema][0]
    if s.schema == "gcv":
        return s.client.post(
            f"{s.url}/v1/images:annotate",
            content=raw,
            headers={"X-Goog-Api-Key": key, "Content-Type": "application/json"},
        )
    if s.schema == "clarifai":
        return s.client.post(
            f"{s.url}/v2/models/m/outputs", content=raw, headers={"Authorization": f"Key {key}"}
        )
    akid, _, secret = key.partition(":")
    base = {
        "X-Amz-Target": "RekognitionService.DetectLabels",
        "Content-Type": "application/x-amz-json-1.1",
    }
    return s.client.post(f"{s.url}/", content=raw, headers=signed(s.url, raw, akid, secret, base))
