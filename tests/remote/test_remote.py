"""HttpLabelTarget against a real uvicorn server on 127.0.0.1 (a fake colour model keeps calls
fast), with FaultInjector for retries; and unit tests over httpx.MockTransport for the retry
policy, the backoff maths and the error mapping."""

from __future__ import annotations

import io
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from numpy.typing import NDArray
from PIL import Image

from bbattack import CallableClassifier, Oracle, imagenet_classes
from bbattack.attacks.label.partial import PIAttack
from bbattack.errors import OracleError, UserInputError
from bbattack.oracle import TopK, TopKObservation
from bbattack.remote import (
    HttpLabelTarget,
    QuotaExhausted,
    RemoteAuthError,
    RemoteError,
    SpendCapExceeded,
    cache_key,
    encode_png,
)
from bbattack.service import create_app
from bbattack.service.faults import FaultInjector
from bbattack.service.runner import serve_in_thread as live
from bbattack.targets import LabelTarget

KEY = "remote-test-key-0001"
GOLDEN_RETRIEVER, TABBY, ESPRESSO = 207, 281, 967
CHANNEL_LABEL = ("dog", "cat", "espresso")  # what each colour is labelled (top 10)
FloatArray = NDArray[np.float32]
Labels = list[list[tuple[str, float]]]


# --- a live server ------------------------------------------------------------------------


def colour_logits(x: FloatArray) -> FloatArray:
    """Logits 20 x mean red / green / blue for golden retriever / tabby / espresso, 0 for the
    997 other classes: labels follow the colour, scores its intensity."""
    m = x.mean(axis=(2, 3))
    z = np.zeros((len(x), 1000), np.float32)
    z[:, GOLDEN_RETRIEVER], z[:, TABBY], z[:, ESPRESSO] = 20 * m[:, 0], 20 * m[:, 1], 20 * m[:, 2]
    return z


def colour_app(**options: Any) -> FastAPI:
    model = CallableClassifier(
        colour_logits, (3, 224, 224), 1000, class_names=imagenet_classes(), name="fake-colour"
    )
    return create_app(model, api_keys=[KEY], **options)


@dataclass
class Server:
    url: str
    app: FastAPI

    def billed(self) -> int:
        return int(self.app.state.usage.get(KEY, 0))


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    app = colour_app()
    with live(app) as url:
        yield Server(url, app)


def images(n: int, seed: int = 0, size: int = 16) -> FloatArray:
    """``n`` distinct flat-colour images; image i is mostly channel i % 3. ``seed`` (0-8)
    shifts the intensities, so tests do not share images (up to 46 distinct ones)."""
    x = np.zeros((n, 3, size, size), np.float32)
    for i in range(n):
        c = i % 3
        x[i, c] = (110 + (3 * i + 17 * seed) % 140) / 255
        x[i, (c + 1) % 3] = 10 * (i % 7) / 255
    return x


def client(server: Server, **kw: Any) -> HttpLabelTarget:
    return HttpLabelTarget(server.url, KEY, **kw)


def journal_rows(path: Path) -> list[tuple[str, int, int]]:
    with sqlite3.connect(path) as db:
        return [
            (str(k), int(p), int(h))
            for k, p, h in db.execute("SELECT key, paid, hits FROM queries ORDER BY key")
        ]


# --- labels, order, concurrency -----------------------------------------------------------


def test_a_batch_comes_back_in_input_order(server: Server) -> None:
    x = images(20, seed=0)
    before = server.billed()
    with client(server, images_per_call=4, concurrency=4) as remote:
        got = remote.annotate(x)
        assert remote.http_calls == 5
        assert (remote.paid_queries, remote.cached_queries, remote.retries) == (20, 0, 0)
    assert server.billed() - before == 20
    assert len(got) == 20
    for i, labels in enumerate(got):
        assert labels, f"image {i} got no labels"
        assert CHANNEL_LABEL[i % 3] in {d.lower() for d, _ in labels}
        assert all(0 < s <= 1 for _, s in labels)  # ranked by topicality, not by score
    # One image per call, one call at a time: the same answers, so nothing was shuffled.
    with client(server, images_per_call=1, concurrency=1) as one_by_one:
        assert [one_by_one.annotate(x[i : i + 1])[0] for i in range(20)] == got


def test_max_results_is_sent_and_part_of_the_query(server: Server) -> None:
    x = images(2, seed=1)
    with client(server, max_results=2) as short, client(server) as full:
        a, b = short.annotate(x), full.annotate(x)
    assert [len(labels) for labels in a] == [2, 2]
    assert all(len(labels) > 2 for labels in b)
    assert [labels[:2] for labels in b] == a
    assert cache_key(encode_png(x[0]), 2) != cache_key(encode_png(x[0]), 10)


def test_it_is_a_label_source_for_the_oracle(server: Server) -> None:
    x = images(3, seed=8)
    with client(server, input_shape=(3, 16, 16)) as remote:
        target = LabelTarget(remote)
        assert target.input_shape == (3, 16, 16)
        obs = target.observe(x, TopK(3))
        direct = remote.annotate(x)
        assert remote.http_calls == 1  # the second look came from the journal
    assert isinstance(obs, TopKObservation)
    for i in range(3):
        names = [target.class_names.name(int(j)) for j in obs.labels[i]]
        assert [n.lower() for n in names] == [d.lower() for d, _ in direct[i][:3]]
        assert np.allclose(obs.scores[i], [s for _, s in direct[i][:3]])


# --- the journal --------------------------------------------------------------------------


def test_the_journal_answers_repeats_for_free(server: Server, tmp_path: Path) -> None:
    x = images(20, seed=2)
    path = tmp_path / "journal.sqlite"
    before = server.billed()
    with client(server, journal=path) as remote:
        first = remote.annotate(x)
        calls = remote.http_calls
        assert remote.annotate(x) == first
        assert remote.annotate(x[::-1]) == first[::-1]
        assert remote.http_calls == calls
        assert (remote.paid_queries, remote.cached_queries) == (20, 40)
        assert remote.cost == pytest.approx(20 * 1.5 / 1000)
        entries = list(remote.journal_entries())
    assert server.billed() - before == 20
    rows = journal_rows(path)
    assert len(rows) == 20
    assert {k for k, _, _ in rows} == {cache_key(encode_png(img), 10) for img in x}
    assert all(paid == 1 and hits == 2 for _, paid, hits in rows)
    assert sorted(e.key for e in entries) == [k for k, _, _ in rows]
    by_key = {e.key: e for e in entries}
    assert [by_key[cache_key(encode_png(img), 10)].labels for img in x] == first
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    # A new client on the same file: everything is served from it, nothing is sent.
    with client(server, journal=path) as again:
        assert again.annotate(x) == first
        assert (again.http_calls, again.paid_queries, again.cached_queries) == (0, 0, 20)
    assert server.billed() - before == 20
    assert len(journal_rows(path)) == 20


def test_repeats_within_one_call_are_paid_once(server: Server) -> None:
    x = images(3, seed=3)
    before = server.billed()
    with client(server) as remote:
        got = remote.annotate(x[[0, 1, 0, 2, 1, 0]])
        assert (remote.paid_queries, remote.cached_queries, remote.http_calls) == (3, 3, 1)
        assert len(list(remote.journal_entries())) == 3
    assert got[0] == got[2] == got[5]
    assert got[1] == got[4]
    assert server.billed() - before == 3


# --- spend caps ---------------------------------------------------------------------------


def test_max_queries_refuses_a_call_before_sending(server: Server) -> None:
    x = images(30, seed=4)
    before = server.billed()
    with client(server, max_queries=25) as remote:
        remote.annotate(x[:20])
        calls = remote.http_calls
        with pytest.raises(SpendCapExceeded, match="max_queries=25") as e:
            remote.annotate(x[20:30])
        assert isinstance(e.value, OracleError)
        assert "20 paid queries" in str(e.value)
        assert "$0.0300" in str(e.value)
        assert remote.http_calls == calls
        assert server.billed() - before == 20
        remote.annotate(x[:20])  # already paid for: free, so under the cap
        remote.annotate(x[20:25])  # exactly up to the cap
        assert remote.paid_queries == 25
        assert remote.remaining_queries == 0
        with pytest.raises(SpendCapExceeded):
            remote.annotate(x[25:26])
    assert server.billed() - before == 25


def test_max_cost_refuses_a_call_before_sending(server: Server) -> None:
    x = images(11, seed=5)
    before = server.billed()
    # $0.015 is exactly 10 images at $1.50 per 1000.
    with client(server, max_cost=0.015) as remote:
        with pytest.raises(SpendCapExceeded, match=r"max_cost=\$0\.0150") as e:
            remote.annotate(x)
        assert "spent so far: 0 paid queries" in str(e.value)
        assert remote.http_calls == 0
        assert server.billed() == before
        remote.annotate(x[:10])
        assert remote.cost == pytest.approx(0.015)
        with pytest.raises(SpendCapExceeded, match="10 paid queries"):
            remote.annotate(x[10:])
    assert server.billed() - before == 10


def test_describe_plan_is_a_dry_run() -> None:
    remote = HttpLabelTarget("http://127.0.0.1:9", "k-0000", max_cost=10.0)
    assert remote.describe_plan(11_234) == (
        "expected 11,234 queries ≈ $16.85 at $1.50/1000; the spend cap stops it after 6,666 more"
    )
    assert remote.estimate_cost(1000) == pytest.approx(1.5)
    assert remote.describe_plan(10) == "expected 10 queries ≈ $0.0150 at $1.50/1000"
    assert remote.http_calls == 0
    remote.close()


# --- retries against a faulty server ------------------------------------------------------


def test_faults_are_retried_to_the_same_answers(server: Server, tmp_path: Path) -> None:
    x = images(40, seed=6)
    with client(server, images_per_call=2) as clean:
        expected = clean.annotate(x)
    app = colour_app()
    # Seed 3 draws every kind within the calls this test makes.
    # The client's timeout is far above a passed call's latency on a loaded machine (1.6 s
    # seen under CI's parallel tests), so only the injected timeouts time out.
    faulty = FaultInjector(app, rate=0.3, seed=3, timeout_s=4.0)
    sleeps: list[float] = []
    path = tmp_path / "journal.sqlite"
    with (
        live(faulty) as url,
        HttpLabelTarget(
            url,
            KEY,
            images_per_call=2,
            concurrency=4,
            timeout_s=3.0,
            max_retries=30,
            backoff_base_s=0.01,
            backoff_max_s=0.05,
            journal=path,
            sleep=sleeps.append,
            rng_seed=0,
        ) as remote,
    ):
        got = remote.annotate(x)
        paid, retries, calls = remote.paid_queries, remote.retries, remote.http_calls
    assert got == expected
    assert set(faulty.injected) == {"429", "500", "timeout", "truncated"}
    assert faulty.passed == 20
    assert retries == faulty.injected.total() == len(sleeps)
    assert calls == 20 + retries
    # Faults are answered before the service runs: only the 40 labelled images are billed.
    assert int(app.state.usage.get(KEY, 0)) == paid == 40
    rows = journal_rows(path)
    assert len(rows) == 40
    assert {k for k, _, _ in rows} == {cache_key(encode_png(img), 10) for img in x}
    assert all(0.0 <= s <= 0.05 for s in sleeps)


def test_a_rate_limit_waits_for_retry_after() -> None:
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        time.sleep(s)

    app = colour_app(rate=2.0, burst=1)
    with (
        live(app) as url,
        HttpLabelTarget(
            url, KEY, images_per_call=1, concurrency=1, sleep=sleep, rng_seed=0
        ) as remote,
    ):
        got = remote.annotate(images(2, seed=7))
        assert remote.retries == 1
        assert remote.paid_queries == 2
    assert len(got) == 2
    # The gateway said Retry-After: 1; the jittered backoff alone would be under 0.5 s.
    assert sleeps == [1.0]
    assert int(app.state.usage[KEY]) == 2


# --- errors that are not retried ----------------------------------------------------------


def test_quota_exceeded_is_not_retried() -> None:
    app = colour_app(quota=3)
    x = images(4, seed=8)
    with live(app) as url, HttpLabelTarget(url, KEY, sleep=lambda s: None) as remote:
        with pytest.raises(QuotaExhausted, match=r"QUOTA|quota") as e:
            remote.annotate(x)
        assert isinstance(e.value, OracleError)
        assert not isinstance(e.value, UserInputError)
        assert (remote.http_calls, remote.retries, remote.paid_queries) == (1, 0, 0)
        assert remote.annotate(x[:3])
        with pytest.raises(QuotaExhausted):
            remote.annotate(x[3:])
        assert remote.http_calls == 3
    assert int(app.state.usage[KEY]) == 3


def test_a_bad_key_is_a_user_error(server: Server) -> None:
    wrong = "not-the-right-key-9999"
    with HttpLabelTarget(server.url, wrong, sleep=lambda s: None) as remote:
        with pytest.raises(RemoteAuthError, match="API key not valid") as e:
            remote.annotate(images(1))
        assert isinstance(e.value, UserInputError)
        assert isinstance(e.value, OracleError)
        assert wrong not in str(e.value)
        assert (remote.http_calls, remote.retries) == (1, 0)
        assert wrong not in repr(remote)


# --- unit tests over a mock transport -----------------------------------------------------

Step = Callable[[httpx.Request], httpx.Response]


def answer(request: httpx.Request) -> httpx.Response:
    """A well-formed answer: image i of the call gets the label "L<maxResults>-<i>"."""
    reqs = json.loads(request.content)["requests"]
    return httpx.Response(
        200,
        json={
            "responses": [
                {
                    "labelAnnotations": [
                        {
                            "mid": "/m/0",
                            "description": f"L{r['features'][0]['maxResults']}-{i}",
                            "score": 0.9,
                            "topicality": 0.9,
                        }
                    ]
                }
                for i, r in enumerate(reqs)
            ]
        },
    )


def status(code: int, reason: str | None = None, **headers: str) -> Step:
    err: dict[str, Any] = {"code": code, "message": f"server says {code}", "status": "X"}
    if reason:
        err["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}]
    return lambda request: httpx.Response(code, json={"error": err}, headers=headers)


def raising(exc: type[httpx.RequestError]) -> Step:
    def step(request: httpx.Request) -> httpx.Response:
        raise exc("injected", request=request)

    return step


def truncated(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=answer(request).content[:20])


class Script:
    """A MockTransport handler that plays ``steps`` in order, then answers well."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
            step = self.steps.pop(0) if self.steps else answer
        return step(request)


def mock(script: Script, sleeps: list[float] | None = None, **kw: Any) -> HttpLabelTarget:
    options: dict[str, Any] = {
        "rng_seed": 0,
        "sleep": (sleeps if sleeps is not None else []).append,
    }
    return HttpLabelTarget(
        "https://vision.example/v1/images:annotate",
        "secret-key-1234",
        transport=httpx.MockTransport(script),
        **(options | kw),
    )


def test_backoff_is_full_jitter_under_the_cap() -> None:
    sleeps: list[float] = []
    script = Script(*[status(500)] * 4, status(503), status(502), raising(httpx.ReadTimeout))
    with mock(script, sleeps, backoff_base_s=0.5, backoff_max_s=4.0, max_retries=8) as remote:
        assert remote.annotate(images(1)) == [[("L10-0", 0.9)]]
        assert (remote.retries, remote.http_calls) == (7, 8)
    assert len(sleeps) == 7
    for attempt, s in enumerate(sleeps):
        assert 0.0 <= s <= min(4.0, 0.5 * 2**attempt)
    assert max(sleeps[3:]) > 2.0  # jitter spreads up to the cap, not just under the base
    # The RNG is seeded: the same seed gives the same waits, another seed other ones.
    again: list[float] = []
    other: list[float] = []
    for out, seed in ((again, 0), (other, 1)):
        steps = Script(*[status(500)] * 4, status(503), status(502), raising(httpx.ReadTimeout))
        with mock(steps, out, backoff_max_s=4.0, rng_seed=seed) as remote:
            remote.annotate(images(1))
    assert again == sleeps
    assert other != sleeps


def in_30_s() -> str:
    """Retry-After as an HTTP date, 30 s from now (whole seconds: 29 to 30 s away)."""
    return format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)


@pytest.mark.parametrize(
    ("header", "at_least"),
    [(lambda: "7", 7.0), (lambda: "2.5", 2.5), (in_30_s, 28.0)],
    ids=["seconds", "fraction", "http-date"],
)
def test_retry_after_is_honoured(header: Callable[[], str], at_least: float) -> None:
    sleeps: list[float] = []
    script = Script(status(429, "RATE_LIMIT_EXCEEDED", **{"Retry-After": header()}))
    with mock(script, sleeps) as remote:
        remote.annotate(images(1))
    assert len(sleeps) == 1
    assert at_least <= sleeps[0] <= 31.0


def test_a_503_with_retry_after_waits_too() -> None:
    sleeps: list[float] = []
    with mock(Script(status(503, **{"Retry-After": "3"})), sleeps) as remote:
        remote.annotate(images(1))
    assert sleeps == [3.0]


def test_transport_errors_and_bad_bodies_are_retried() -> None:
    script = Script(
        raising(httpx.ConnectError),
        raising(httpx.ReadError),
        raising(httpx.RemoteProtocolError),
        truncated,
        lambda r: httpx.Response(200, json={"responses": []}),  # wrong count
        lambda r: httpx.Response(200, json={"responses": [{"labelAnnotations": [{"x": 1}]}]}),
        lambda r: httpx.Response(200, content=b"<html>proxy</html>"),
    )
    with mock(script) as remote:
        assert remote.annotate(images(1)) == [[("L10-0", 0.9)]]
        assert (remote.retries, remote.paid_queries) == (7, 1)


def test_retries_run_out() -> None:
    sleeps: list[float] = []
    with mock(Script(*[status(500)] * 10), sleeps, max_retries=3) as remote:
        with pytest.raises(RemoteError, match=r"gave up after 3 retries.*server says 500"):
            remote.annotate(images(1))
        assert (remote.http_calls, remote.retries, remote.paid_queries) == (4, 3, 0)
        assert list(remote.journal_entries()) == []
    assert len(sleeps) == 3


@pytest.mark.parametrize(
    ("step", "error", "text"),
    [
        (status(400), RemoteError, "server says 400"),
        (status(413), RemoteError, "smaller images_per_call"),
        (status(400, "API_KEY_INVALID"), RemoteAuthError, "check the API key"),
        (status(403), RemoteAuthError, "server says 403"),
        (status(401), RemoteAuthError, "server says 401"),
        (status(429, "QUOTA_EXCEEDED", **{"Retry-After": "86400"}), QuotaExhausted, "quota"),
        (lambda r: httpx.Response(404, text="no such page"), RemoteError, "no such page"),
    ],
)
def test_client_errors_are_not_retried(step: Step, error: type[Exception], text: str) -> None:
    sleeps: list[float] = []
    script = Script(step)
    with mock(script, sleeps) as remote:
        with pytest.raises(error, match=text) as e:
            remote.annotate(images(1))
        assert (remote.http_calls, remote.retries) == (1, 0)
    assert sleeps == []
    assert type(e.value) is error
    assert "secret-key-1234" not in str(e.value)


def test_an_image_answered_with_an_error_names_its_index() -> None:
    def partly(request: httpx.Request) -> httpx.Response:
        good = answer(request).json()["responses"]
        good[2] = {"error": {"code": 3, "message": "Bad image data."}}
        return httpx.Response(200, json={"responses": good})

    script = Script(partly)
    x = images(3)
    with mock(script) as remote:
        with pytest.raises(RemoteError, match=r"image 2: error 3: Bad image data\."):
            remote.annotate(x)
        # The other two were paid for, so they were journalled and now cost nothing.
        assert remote.paid_queries == 2
        assert len(list(remote.journal_entries())) == 2
        assert remote.annotate(x[:2]) == [[("L10-0", 0.9)], [("L10-1", 0.9)]]
        assert (remote.http_calls, remote.cached_queries) == (1, 2)


def test_the_key_goes_in_a_header_never_in_the_url() -> None:
    script = Script()
    with mock(script) as remote:
        remote.annotate(images(1))
        assert "secret-key-1234" not in repr(remote)
    (request,) = script.requests
    assert request.headers["x-goog-api-key"] == "secret-key-1234"
    assert "secret-key-1234" not in str(request.url)
    assert str(request.url) == "https://vision.example/v1/images:annotate"
    body = json.loads(request.content)
    assert body["requests"][0]["features"] == [{"type": "LABEL_DETECTION", "maxResults": 10}]
    with pytest.raises(UserInputError, match="not in the endpoint URL"):
        HttpLabelTarget("https://vision.example/v1/images:annotate?key=abc", "k")


def test_endpoint_and_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BBATTACK_ENDPOINT", "http://svc.example:8080")
    monkeypatch.setenv("BBATTACK_API_KEY", "env-key-5678")
    script = Script()
    with HttpLabelTarget(transport=httpx.MockTransport(script)) as remote:
        remote.annotate(images(1))
    (request,) = script.requests
    assert str(request.url) == "http://svc.example:8080/v1/images:annotate"
    assert request.headers["x-goog-api-key"] == "env-key-5678"
    monkeypatch.delenv("BBATTACK_API_KEY")
    with pytest.raises(UserInputError, match="BBATTACK_API_KEY"):
        HttpLabelTarget()
    monkeypatch.delenv("BBATTACK_ENDPOINT")
    with pytest.raises(UserInputError, match="BBATTACK_ENDPOINT"):
        HttpLabelTarget(api_key="k")


def test_batches_are_split_and_run_concurrently_in_order() -> None:
    in_flight = 0
    most = 0
    lock = threading.Lock()

    def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.05)
        with lock:
            in_flight -= 1
        return answer(request)

    script = Script(*[slow] * 10)
    with mock(script, images_per_call=3, concurrency=4) as remote:
        got = remote.annotate(images(28))
    assert [len(json.loads(r.content)["requests"]) for r in script.requests] == [3] * 9 + [1]
    assert got == [[(f"L10-{i % 3}", 0.9)] for i in range(28)]
    assert 2 <= most <= 4


def test_a_fatal_error_stops_the_batches_not_yet_sent() -> None:
    def slow_quota(request: httpx.Request) -> httpx.Response:
        time.sleep(0.05)
        return status(429, "QUOTA_EXCEEDED")(request)

    script = Script(*[slow_quota] * 20)
    with mock(script, images_per_call=1, concurrency=2) as remote, pytest.raises(QuotaExhausted):
        remote.annotate(images(20))
    assert len(script.requests) < 8


def test_png_bytes_are_deterministic_8_bit() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 9, 7), dtype=np.float32)
    a, b = encode_png(x[0]), encode_png(x[0].copy())
    assert a == b
    assert encode_png(x[1]) != a
    with Image.open(io.BytesIO(a)) as im:
        assert (im.mode, im.size) == ("RGB", (7, 9))
        back = np.asarray(im).transpose(2, 0, 1)
    assert np.array_equal(back, np.rint(x[0].astype(np.float64) * 255).astype(np.uint8))
    grey = encode_png(x[:1, 0])
    with Image.open(io.BytesIO(grey)) as im:
        assert im.mode == "L"


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((3, 8, 8), np.float32),
        np.zeros((1, 2, 8, 8), np.float32),
        np.full((1, 3, 8, 8), 1.5, np.float32),
        np.full((1, 3, 8, 8), np.nan, np.float32),
        np.zeros((1, 3, 8, 8), np.uint8),
    ],
)
def test_bad_images_are_refused_before_anything_is_sent(bad: NDArray[Any]) -> None:
    script = Script()
    with mock(script) as remote, pytest.raises(UserInputError):
        remote.annotate(bad)
    assert script.requests == []


@pytest.mark.parametrize(
    "options",
    [
        {"images_per_call": 17},
        {"images_per_call": 0},
        {"concurrency": 0},
        {"max_results": 0},
        {"timeout_s": 0.0},
        {"max_queries": -1},
        {"max_cost": -1.0},
        {"price_per_1000": 0.0},
        {"input_shape": (2, 8, 8)},
    ],
)
def test_bad_options_are_user_errors(options: dict[str, Any]) -> None:
    with pytest.raises(UserInputError):
        HttpLabelTarget("http://127.0.0.1:9", "k-0000", **options)


def test_an_empty_batch_sends_nothing_and_close_is_final() -> None:
    script = Script()
    remote = mock(script)
    assert remote.annotate(np.zeros((0, 3, 8, 8), np.float32)) == []
    remote.close()
    remote.close()
    with pytest.raises(RemoteError, match="closed"):
        remote.annotate(images(1))
    assert script.requests == []


# --- a whole attack over a faulty network -------------------------------------------------


def pi_over_http(url: str, journal: Path, **client_kw: Any) -> tuple[Any, HttpLabelTarget]:
    """PI against the colour service: a red image ("Dog") must also get the label "Cat"."""
    x = np.zeros((1, 3, 16, 16), np.float32)
    x[0, 0], x[0, 1] = 128 / 255, 102 / 255  # dog logit 10, cat 8: "Cat" scores < 0.2
    start = np.zeros_like(x)
    start[0, 1] = 160 / 255  # green: "Cat" on top
    # Shared ancestors ("Animal", "Mammal", ...) outrank "Cat": ask for 20 labels.
    remote = HttpLabelTarget(
        url,
        KEY,
        max_results=20,
        input_shape=(3, 16, 16),
        journal=journal,
        rng_seed=0,
        **client_kw,
    )
    target = LabelTarget(remote)
    oracle = Oracle(target, TopK(None), max_queries=1500)
    # At ε = 0.05 "Cat" can reach ~0.46, so shrink ε while its loss is below 1 (p > 0.37).
    attack = PIAttack(eps=0.05, samples=10, adv_thresh=1.0)
    tid = target.class_names.resolve("Cat")
    result = attack.run(oracle, x, tid, start=start, seed=0, success="topk")
    remote.close()
    return result, remote


def test_a_pi_attack_over_a_faulty_network_matches_the_fault_free_run(tmp_path: Path) -> None:
    clean_app = colour_app()
    with live(clean_app) as url:
        expected, clean = pi_over_http(url, tmp_path / "clean.sqlite")
    faulty_app = colour_app()
    faults = FaultInjector(faulty_app, rate=0.2, seed=1, timeout_s=1.0)
    with live(faults) as url:
        got, remote = pi_over_http(
            url,
            tmp_path / "faulty.sqlite",
            timeout_s=0.5,
            max_retries=30,
            backoff_base_s=0.01,
            backoff_max_s=0.05,
        )
    assert faults.injected.total() > 0
    (e,), (g,) = expected.images, got.images
    assert e.success
    assert g.model_dump(exclude={"wall_time_s"}) == e.model_dump(exclude={"wall_time_s"})
    assert np.array_equal(got.x_adv, expected.x_adv)
    # Every paid query is billed once, journaled once; repeats were answered for free.
    billed = int(faulty_app.state.usage.get(KEY, 0))
    assert remote.paid_queries == billed == clean.paid_queries
    assert remote.paid_queries + remote.cached_queries == g.queries
    rows = journal_rows(tmp_path / "faulty.sqlite")
    assert len(rows) == remote.paid_queries
    assert all(paid == 1 for _, paid, _ in rows)


def test_a_spend_cap_is_a_budget_the_attack_plans_with(tmp_path: Path) -> None:
    # Regression: --max-cost 0.09 ended in a SpendCapExceeded traceback after 52 paid queries,
    # with no result. The cap (60 images at $1.50/1000) is now a budget the oracle plans with.
    app = colour_app()
    with live(app) as url:
        result, remote = pi_over_http(url, tmp_path / "j.sqlite", max_cost=0.09)
    (r,) = result.images
    assert remote.paid_queries <= 60
    assert int(app.state.usage.get(KEY, 0)) == remote.paid_queries
    assert r.queries <= 60
    assert r.queries_by_kind["final"] == 1
    assert r.stop_reason in ("budget", "success")
    assert r.lost_queries == 0
