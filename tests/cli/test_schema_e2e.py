"""Issue 28 end to end: ``bbattack attack --endpoint URL --schema S`` against ``bbattack serve
--schema S`` for every schema (and ``--schema json`` with JMESPath paths against the Hugging Face
service), untargeted and targeted, with and without injected 429/5xx/timeout/truncated faults:
the attack succeeds, and what the service billed = what result.json paid = the journal's paid
rows. Rekognition's ``Parents`` meet an ancestor target under ``--ancestors``. Each command of
the README's "Other APIs" table runs against a live server.

The service runs in this process on the colour model (tests/crash_driver.py), the command too
(its label API client retrying fast); images and targets are picked so each run succeeds in a
few dozen queries under each API's label forms (tests/schema_support.py)."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bbattack.service.faults import FaultInjector
from bbattack.service.runner import serve_in_thread
from crash_driver import colour_model
from kill_support import Here, make_here, paid
from schema_support import APIS, GOLDISH, GREEN, MAGENTA, Api, label_app, solid

README = Path(__file__).resolve().parents[2] / "README.md"
SCHEMAS = list(APIS)

# What the README's commands call the key.
KEY_WORDS = ("K", "PAT", "T", "AKID:SECRET")
UNTARGETED = ["--untargeted", "--threat", "lo", "--attack", "rays", "--eps", "0.1"]


def targeted(api: Api, start: str) -> list[str]:
    """PI from the green start image, its ε schedule starting at ε: the start image projected
    into the ball around the goldish image is already a tabby."""
    return [
        *["--threat", "pi", "--attack", "pi", "--target", api.tabby, "--start-image", start],
        *["--success", api.success, "--eps", "0.15", "--param", "starting_eps=0.15"],
        *["--param", "samples=10", "--max-results", "20"],
    ]


@pytest.fixture
def here(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Here:
    return make_here(monkeypatch, capsys)


class ProbesPass:
    """ASGI: the command's free pre-flight call (no image: a tiny body) goes straight to the
    service (a fault there stops the command before it pays anything), every call with an
    image through the fault injector."""

    def __init__(self, app: Any, faulty: Any) -> None:
        self.app, self.faulty = app, faulty

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        size = dict(scope.get("headers", [])).get(b"content-length", b"0")
        inner = self.faulty if scope["type"] == "http" and int(size) > 100 else self.app
        await inner(scope, receive, send)


class Served:
    """A live service of one API: its URL, its app (the usage counter) and fault injector."""

    def __init__(self, api: Api, app: Any, url: str, faults: FaultInjector | None) -> None:
        self.api, self.app, self.url, self.faults = api, app, url, faults

    def billed(self) -> int:
        return int(self.app.state.usage.get(self.api.billed_as, 0))


@contextmanager
def serve(api: Api, fault_rate: float = 0.0) -> Iterator[Served]:
    """The service of ``api`` on loopback, failing ``fault_rate`` of its calls with an image."""
    app = label_app(api, colour_model())
    faults = None
    asgi: Any = app
    if fault_rate:
        faults = FaultInjector(app, rate=fault_rate, seed=7, timeout_s=0.05)
        asgi = ProbesPass(app, faults)
    with serve_in_thread(asgi) as url:
        yield Served(api, app, url, faults)


@pytest.fixture(params=SCHEMAS)
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    with serve(APIS[request.param]) as s:
        yield s


@pytest.fixture(params=SCHEMAS)
def faulty(request: pytest.FixtureRequest) -> Iterator[Served]:
    """The service failing 30% of the calls with an image (a failed call is not billed)."""
    with serve(APIS[request.param], fault_rate=0.3) as s:
        yield s


def check_bill(s: Served, out: Path) -> dict[str, Any]:
    """Billed = paid = journal: the service's usage, result.json's paid queries and the
    journal's paid rows agree, nothing was lost, and the cost is the API's price of that."""
    doc: dict[str, Any] = json.loads((out / "result.json").read_text())
    remote = doc["remote"]
    assert remote["schema"] == s.api.schema
    assert remote["paid_queries"] == s.billed() == len(paid(out / "journal.sqlite")) > 0
    assert remote.get("lost_billed", 0) == 0
    price = remote["price_per_1000"]
    if price is not None:
        assert remote["cost_usd"] == pytest.approx(s.billed() * price / 1000)
    return doc


def test_an_untargeted_attack_succeeds_and_bills_what_it_paid(
    served: Served, tmp_path: Path, here: Here
) -> None:
    image, out = solid(tmp_path / "magenta.png", MAGENTA), tmp_path / "run"
    args = ["attack", image, *UNTARGETED, *served.api.argv(served.url)]
    done = here([*args, "--max-queries", "100", "--seed", "0", "--out", str(out)])
    assert done.returncode == 0, done.stderr
    doc = check_bill(served, out)
    assert doc["success"], doc["stop_reason"]
    assert doc["final_topk"][0]["name"] != doc["original"]["name"]


def test_a_targeted_attack_succeeds_and_bills_what_it_paid(
    served: Served, tmp_path: Path, here: Here
) -> None:
    image, start = solid(tmp_path / "gold.png", GOLDISH), solid(tmp_path / "green.png", GREEN)
    out = tmp_path / "run"
    args = ["attack", image, *targeted(served.api, start), *served.api.argv(served.url)]
    done = here([*args, "--max-queries", "60", "--seed", "0", "--out", str(out)])
    assert done.returncode == 0, done.stderr
    doc = check_bill(served, out)
    assert doc["success"], doc["stop_reason"]
    # The label that met the goal, as the API spells it.
    assert doc["matched"]["name"] == doc["target"]["name"] == served.api.tabby


@pytest.mark.parametrize("goal", ["untargeted", "targeted"])
def test_under_injected_faults_the_attack_succeeds_and_billed_is_paid(
    faulty: Served, goal: str, tmp_path: Path, here: Here
) -> None:
    out = tmp_path / "run"
    if goal == "untargeted":
        flags = [solid(tmp_path / "magenta.png", MAGENTA), *UNTARGETED]
    else:
        image = solid(tmp_path / "gold.png", GOLDISH)
        flags = [image, *targeted(faulty.api, solid(tmp_path / "green.png", GREEN))]
    args = ["attack", *flags, *faulty.api.argv(faulty.url), "--max-queries", "100"]
    done = here([*args, "--seed", "0", "--out", str(out)])
    assert done.returncode == 0, done.stderr
    doc = check_bill(faulty, out)
    assert doc["success"], doc["stop_reason"]
    assert faulty.faults is not None
    assert faulty.faults.injected.total() > 0
    assert doc["remote"]["retries"] == faulty.faults.injected.total()


def test_rekognition_parents_meet_an_ancestor_target(tmp_path: Path, here: Here) -> None:
    """One label a call (MaxLabels 1): "Tabby cat", whose Parents name "Cat". With
    --ancestors it meets --target Cat, and result.json says which label did."""
    api = APIS["rekognition"]
    image, start = solid(tmp_path / "gold.png", GOLDISH), solid(tmp_path / "green.png", GREEN)
    flags = ["--threat", "lo", "--attack", "hsj", "--target", "Cat", "--start-image", start]
    flags += ["--success", "topk", "--eps", "0.15", "--max-results", "1", "--seed", "0"]
    with serve(api) as s:
        out = tmp_path / "run"
        args = ["attack", image, *flags, *api.argv(s.url), "--ancestors"]
        done = here([*args, "--max-queries", "40", "--out", str(out)])
        assert done.returncode == 0, done.stderr
        doc = check_bill(s, out)
        assert doc["success"], doc["stop_reason"]
        assert doc["target"]["name"] == "Cat"
        assert doc["matched"]["name"] == "Tabby cat"
        # Without --ancestors, no answer shows "Cat" itself: the start image is refused.
        plain = here([*args[:-1], "--max-queries", "40", "--out", str(tmp_path / "plain")])
        assert plain.returncode == 0, plain.stderr
        assert json.loads((tmp_path / "plain" / "result.json").read_text())["success"] is False


def readme_commands() -> list[tuple[str, str]]:
    """(schema, command) of each row of the README's "Other APIs" table."""
    lines = README.read_text(encoding="utf-8").splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("| schema") and "attack it" in ln)
    out = []
    for ln in lines[head + 2 :]:
        if not ln.startswith("|"):
            break
        cells = [c.strip() for c in ln.strip().strip("|").split("|")]
        name = re.match(r"`(\w+)`", cells[0])
        assert name is not None, ln
        out.append((name.group(1), cells[-1].strip("`")))
    return out


COMMANDS = readme_commands()


@pytest.mark.parametrize(("schema", "command"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_each_readme_command_runs_against_its_service(
    schema: str, command: str, tmp_path: Path, here: Here
) -> None:
    """The command as written (IMG, URL and the key filled in; a small budget and an output
    folder added) parses, passes the free check and pays for its queries."""
    api = APIS[schema]
    words = shlex.split(command)
    assert words[:3] == ["bbattack", "attack", "IMG"], command
    assert "--schema" in words or schema == "gcv", command
    fill = {"IMG": solid(tmp_path / "gold.png", GOLDISH), **dict.fromkeys(KEY_WORDS, api.key)}
    with serve(api) as s:
        args = [{**fill, "URL": s.url + api.path}.get(w, w) for w in words]
        done = here([*args[1:], "--max-queries", "40", "--out", str(tmp_path / "run")])
        assert "No such option" not in done.stderr, done.stderr
        assert "Usage:" not in done.stderr, done.stderr
        assert s.billed() > 0, done.stderr
        # An exit 2 here is the target: the colour model has no bundled photo labelled so.
        assert done.returncode == 0 or "give a start image" in done.stderr, done.stderr
