"""HttpLabelTarget under every wire schema, against fakes of the APIs written from their
documented formats (tests/api_fakes.py): request shape and authentication (Rekognition's
SigV4 signature recomputed by the fake with botocore), decoding onto one 0-1 scale, the
hierarchy, each API's error and quota signals, retries, billing, the free probe, and a journal
that never mixes answers of different APIs."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray

from api_fakes import (
    AKID,
    KEY,
    SECRET,
    AzureFake,
    ClarifaiFake,
    Fake,
    GoogleFake,
    HfFake,
    JsonFake,
    RekognitionFake,
    aws_error,
    azure_error,
    clarifai_error,
    gcv_error,
    hf_error,
    truth,
)
from bbattack.errors import UserInputError
from bbattack.remote import (
    PRICES,
    HttpLabelTarget,
    QuotaExhausted,
    RemoteAuthError,
    RemoteError,
    encode_png,
)

Handler = Callable[[httpx.Request], httpx.Response]


@dataclass(frozen=True)
class Api:
    endpoint: str
    key: str
    fake: Callable[[], Fake]
    options: dict[str, Any] = field(default_factory=dict)
    lower: bool = False  # the API answers lower-case names


JSON_OPTIONS = {
    "labels_path": "predictions[*].label",
    "scores_path": "predictions[*].pct",
    "request_template": '{"instances": [{"b64": "$IMAGE"}], "top_k": "$MAX_RESULTS"}',
    "auth": "X-Api-Key: {key}",
    "score_scale": 100,
}
APIS = {
    "gcv": Api("https://vision.example", KEY, GoogleFake),
    "rekognition": Api(
        "https://rekognition.eu-west-1.amazonaws.com", f"{AKID}:{SECRET}", RekognitionFake
    ),
    "azure": Api("https://res.cognitiveservices.azure.com", KEY, AzureFake, lower=True),
    "clarifai": Api(
        "https://api.clarifai.com/v2/users/u/apps/a/models/general/outputs",
        KEY,
        ClarifaiFake,
        lower=True,
    ),
    "hf": Api("https://api-inference.huggingface.co/models/google/vit", KEY, HfFake, lower=True),
    "json": Api("https://api.example/predict", KEY, JsonFake, JSON_OPTIONS),
}
SCHEMAS = sorted(APIS)
ONE_PER_CALL = {"rekognition", "azure", "hf", "json"}


def images(n: int, seed: int = 0) -> NDArray[np.float32]:
    """``n`` distinct small images."""
    x = np.zeros((n, 3, 8, 8), np.float32)
    for i in range(n):
        x[i] = ((37 * i + 11 * seed) % 200 + 20) / 255
    return x


def client(
    schema: str, fake: Fake, sleeps: list[float] | None = None, **kw: Any
) -> HttpLabelTarget:
    api = APIS[schema]
    return HttpLabelTarget(
        api.endpoint,
        kw.pop("api_key", api.key),
        schema,
        schema_options=api.options,
        transport=httpx.MockTransport(fake),
        sleep=(sleeps if sleeps is not None else []).append,
        rng_seed=0,
        **kw,
    )


def expected(schema: str, x: NDArray[np.float32]) -> list[list[tuple[str, float]]]:
    low = APIS[schema].lower
    return [[(n.lower() if low else n, s) for n, s, _ in truth(encode_png(i))] for i in x]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_labels_are_decoded_onto_one_scale_and_billed_once(schema: str, tmp_path: Path) -> None:
    fake = APIS[schema].fake()
    x = images(3)
    with client(schema, fake, journal=tmp_path / "j.sqlite") as remote:
        got = remote.annotate(np.concatenate([x, x[:1]]))  # a repeat is free
        again = remote.annotate(x)  # the journal answers
        rows = list(remote.journal_entries())
        assert (remote.paid_queries, remote.cached_queries) == (3, 4)
    want = expected(schema, x)
    assert [[n for n, _ in labels] for labels in got] == [
        [n for n, _ in w] for w in want + want[:1]
    ]
    scores = [s for labels in got for _, s in labels]
    assert scores == pytest.approx([s for w in want + want[:1] for _, s in w])
    assert again == got[:3]
    assert fake.billed == remote.paid_queries == len(rows) == 3
    assert sorted(r.labels for r in rows) == sorted(got[:3])  # calls ran concurrently
    assert len(fake.requests) == (3 if schema in ONE_PER_CALL else 1)
    for r in fake.requests:  # the key travels in a header or a signature, never the URL
        assert KEY not in str(r.url)
        assert SECRET not in str(r.url)
        assert SECRET not in r.headers.get("authorization", "")


def test_rekognition_signs_with_sigv4_and_keeps_the_parents() -> None:
    fake = RekognitionFake()
    with client("rekognition", fake) as remote:
        assert remote.schema.region == "eu-west-1"  # type: ignore[attr-defined]
        remote.annotate(images(1))
        assert remote.ancestors("Dog") == ("Mammal", "Animal")
        assert remote.ancestors("Animal") == ()
    (request,) = fake.requests
    assert request.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AKID}/")
    assert "/eu-west-1/rekognition/aws4_request" in request.headers["authorization"]
    body = json.loads(request.content)
    assert (body["MaxLabels"], body["MinConfidence"]) == (10, 55.0)  # the API's default
    # A wrong secret: the fake's recomputed signature differs, and the key is refused.
    wrong = RekognitionFake()
    with client("rekognition", wrong, api_key=f"{AKID}:not-the-secret") as remote:
        with pytest.raises(RemoteAuthError, match="InvalidSignatureException"):
            remote.annotate(images(1))
        assert (remote.retries, wrong.billed) == (0, 0)
    other = client("rekognition", RekognitionFake(), api_key="AKIDOTHER:x")
    with other, pytest.raises(RemoteAuthError, match="UnrecognizedClient"):
        other.annotate(images(1))
    local = HttpLabelTarget("http://127.0.0.1:9", "A:B", "rekognition")
    assert local.schema.region == "us-east-1"  # type: ignore[attr-defined]
    local.close()


RETRY = "retry"
CASES: list[tuple[str, Handler, type[Exception] | str, str]] = [
    ("gcv", gcv_error(429, "RESOURCE_EXHAUSTED", "RATE_LIMIT_EXCEEDED"), RETRY, ""),
    ("gcv", gcv_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"), QuotaExhausted, "quota"),
    ("rekognition", aws_error(400, "ThrottlingException"), RETRY, ""),
    ("rekognition", aws_error(400, "ProvisionedThroughputExceededException"), RETRY, ""),
    ("rekognition", aws_error(500, "InternalServerError"), RETRY, ""),
    ("rekognition", aws_error(400, "AccessDeniedException"), RemoteAuthError, "AccessDenied"),
    ("rekognition", aws_error(400, "ImageTooLargeException"), RemoteError, "5 MB"),
    ("rekognition", aws_error(400, "InvalidImageFormatException"), RemoteError, "InvalidImage"),
    (
        "azure",
        azure_error(429, "429", "Rate limit is exceeded.", **{"Retry-After": "2"}),
        RETRY,
        "",
    ),
    ("azure", azure_error(503, "ServiceUnavailable", "busy"), RETRY, ""),
    ("azure", azure_error(401, "401", "Access denied"), RemoteAuthError, "Access denied"),
    (
        "azure",
        azure_error(403, "403", "Out of call volume quota for ComputerVision F0 pricing tier."),
        QuotaExhausted,
        "Out of call volume",
    ),
    (
        "azure",
        azure_error(400, "InvalidRequest", "Image format is not valid."),
        RemoteError,
        "HTTP 400",
    ),
    ("clarifai", clarifai_error(429, 11005, "Making too many requests"), RETRY, ""),
    ("clarifai", clarifai_error(401, 11001, "Invalid auth token"), RemoteAuthError, "11001"),
    ("clarifai", clarifai_error(401, 11002, "Invalid credentials"), RemoteAuthError, "11002"),
    ("clarifai", clarifai_error(402, 11003, "Hourly limit exceeded"), QuotaExhausted, "11003"),
    ("clarifai", clarifai_error(402, 11004, "Monthly limit exceeded"), QuotaExhausted, "11004"),
    ("clarifai", clarifai_error(400, 30300, "Image decode failed"), RemoteError, "30300"),
    ("hf", hf_error(503, "Model google/vit is currently loading", estimated_time=7.5), RETRY, ""),
    ("hf", hf_error(429, "Rate limit reached"), RETRY, ""),
    (
        "hf",
        hf_error(402, "You have exceeded your monthly included credits"),
        QuotaExhausted,
        "credits",
    ),
    ("hf", hf_error(401, "Invalid credentials"), RemoteAuthError, "Invalid credentials"),
    ("hf", hf_error(400, "Could not decode the image"), RemoteError, "decode"),
    ("json", lambda r: httpx.Response(500, text="oops"), RETRY, ""),
    ("json", lambda r: httpx.Response(402, json={"error": "pay up"}), QuotaExhausted, "pay"),
    ("json", lambda r: httpx.Response(403, json={"message": "no"}), RemoteAuthError, "no"),
]


@pytest.mark.parametrize(("schema", "step", "means", "text"), CASES)
def test_each_api_signal_maps_to_bbattack(
    schema: str, step: Handler, means: type[Exception] | str, text: str
) -> None:
    fake = APIS[schema].fake()
    fake.fail_next(step)
    sleeps: list[float] = []
    with client(schema, fake, sleeps) as remote:
        if means == RETRY:
            assert remote.annotate(images(1)) != [[]]
            assert (remote.retries, remote.paid_queries, fake.billed) == (1, 1, 1)
        else:
            assert isinstance(means, type)
            with pytest.raises(means, match=text) as e:
                remote.annotate(images(1))
            assert type(e.value) is means
            assert (remote.retries, remote.paid_queries, fake.billed) == (0, 0, 0)
            assert KEY not in str(e.value)
            assert SECRET not in str(e.value)
    assert len(sleeps) == (1 if means == RETRY else 0)


def test_retry_after_and_loading_time_are_waited_for() -> None:
    sleeps: list[float] = []
    fake = AzureFake()
    fake.fail_next(azure_error(429, "429", "slow down", **{"Retry-After": "4"}))
    with client("azure", fake, sleeps) as remote:
        remote.annotate(images(1))
    hf = HfFake()
    hf.fail_next(hf_error(503, "loading", estimated_time=12.0))
    with client("hf", hf, sleeps) as remote:
        remote.annotate(images(1))
    assert sleeps[0] >= 4.0
    assert sleeps[1] >= 12.0


@pytest.mark.parametrize("schema", SCHEMAS)
def test_billed_equals_paid_equals_journal_under_faults(schema: str) -> None:
    retryable = {
        "gcv": gcv_error(503, "UNAVAILABLE"),
        "rekognition": aws_error(400, "ThrottlingException"),
        "azure": azure_error(429, "429", "slow"),
        "clarifai": clarifai_error(429, 11005, "throttled"),
        "hf": hf_error(503, "loading", estimated_time=0.0),
        "json": lambda r: httpx.Response(502, text="bad gateway"),
    }[schema]
    fake = APIS[schema].fake()
    fake.fail_next(retryable, lambda r: httpx.Response(200, content=b'{"trunc'), retryable)
    with client(schema, fake, concurrency=2) as remote:
        remote.annotate(images(5, seed=1))
        rows = list(remote.journal_entries())
        assert remote.retries == 3
    assert fake.billed == remote.paid_queries == len(rows) == 5


@pytest.mark.parametrize("schema", SCHEMAS)
def test_the_probe_is_free_or_skipped(schema: str) -> None:
    fake = APIS[schema].fake()
    with client(schema, fake) as remote:
        said = remote.probe()
    assert fake.billed == 0
    if schema == "json":
        assert "skipped" in said
        assert fake.requests == []
    else:
        assert "takes the key" in said
        assert len(fake.requests) == 1
        bad = APIS[schema].fake()
        key = f"{AKID}:wrong" if schema == "rekognition" else "wrong-key-999"
        with client(schema, bad, api_key=key) as remote, pytest.raises(RemoteAuthError):
            remote.probe()


def test_a_journal_never_mixes_answers_of_different_apis(tmp_path: Path) -> None:
    path, x = tmp_path / "shared.sqlite", images(2, seed=2)
    google, hf = GoogleFake(), HfFake()
    with client("gcv", google, journal=path) as a:
        a.annotate(x)
        ident_a = a.identity()
    with client("hf", hf, journal=path) as b:
        got = b.annotate(x)  # the same images: the hf API is asked, not Google's rows
        assert (b.paid_queries, b.cached_queries) == (2, 0)
        assert got == expected("hf", x)
        assert sorted(e.schema for e in b.journal_entries()) == ["gcv", "gcv", "hf", "hf"]
        assert b.identity() != ident_a
        assert "schema=hf" in b.identity()
    with client("gcv", GoogleFake(), journal=path) as c:
        c.annotate(x)
        assert (c.paid_queries, c.cached_queries, c.http_calls) == (0, 2, 0)
    assert ident_a == f"{APIS['gcv'].endpoint}/v1/images:annotate|max_results=10"


def test_clarifai_batches_and_names_an_image_it_could_not_read() -> None:
    fake = ClarifaiFake()
    with client("clarifai", fake) as remote:
        remote.annotate(images(130, seed=3))
        assert [len(json.loads(r.content)["inputs"]) for r in fake.requests] == [128, 2]
    bad = ClarifaiFake()
    bad.bad_input = {1}
    with client("clarifai", bad) as remote:
        with pytest.raises(RemoteError, match=r"image 1: error 30300: Input image decode"):
            remote.annotate(images(3, seed=4))
        assert remote.paid_queries == bad.billed == len(list(remote.journal_entries())) == 2


@pytest.mark.parametrize(
    ("schema", "endpoint", "key", "options", "text"),
    [
        ("nope", "https://x.example", KEY, {}, "unknown schema"),
        ("clarifai", "https://api.clarifai.com", KEY, {}, "outputs URL"),
        ("hf", "https://api-inference.huggingface.co", KEY, {}, "model's URL"),
        (
            "rekognition",
            "https://rekognition.us-east-1.amazonaws.com",
            "justakey",
            {},
            "ACCESS_KEY_ID",
        ),
        ("json", "https://x.example", KEY, {"labels_path": "a[*]"}, "scores-path"),
        ("json", "https://x.example", KEY, {"labels_path": "a[", "scores_path": "b"}, "JMESPath"),
        ("gcv", "https://x.example", KEY, {"labels_path": "a"}, "does not take labels_path"),
        ("rekognition", "https://x.example", "A:B", {"min_confidence": 101}, "min_confidence"),
        ("hf", "https://x.example/models/m", KEY, {"images_per_call": 2}, "images_per_call"),
        ("hf", "https://x.example/models/m", KEY, {"max_cost": 1.0}, "price"),
        ("azure", "https://x.example?subscription-key=abc", KEY, {}, "not in the endpoint"),
    ],
)
def test_bad_schema_options_are_user_errors(
    schema: str, endpoint: str, key: str, options: dict[str, Any], text: str
) -> None:
    top = {k: options.pop(k) for k in ("images_per_call", "max_cost") if k in options}
    with pytest.raises(UserInputError, match=text):
        HttpLabelTarget(endpoint, key, schema, schema_options=options, **top)


def test_each_schema_has_its_price_and_limits() -> None:
    prices = {s: PRICES[s].per_1000 for s in SCHEMAS}
    assert prices == {
        "gcv": 1.5,
        "rekognition": 1.0,
        "azure": 1.0,
        "clarifai": None,
        "hf": None,
        "json": None,
    }
    with HttpLabelTarget("https://rekognition.us-east-1.amazonaws.com", "A:B", "rekognition") as r:
        assert (r.price_per_1000, r.images_per_call) == (1.0, 1)
        assert "at $1.00/1000" in r.describe_plan(1000)
    with HttpLabelTarget("https://x.example/models/m", "k", "hf") as h:
        assert (h.price_per_1000, h.cost) == (None, 0.0)
        assert "no per-image price" in h.describe_plan(10)
    with HttpLabelTarget("https://x.example/models/m", "k", "hf", price_per_1000=0.5) as h:
        assert h.estimate_cost(2000) == 1.0
