"""Issue 14: a paid query is never wasted by a bad flag, an image is read as a person sees it,
and a remote target that stops answering ends the attack cleanly. The attack command runs on a
fake ImageNet-shaped model (its classes follow the mean colour), so each run takes a second."""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

import bbattack.cli._remote as cli_remote
import bbattack.cli._session as cli_session
import bbattack.cli.attack as cli_attack
from bbattack import (
    CallableClassifier,
    ImageLoadError,
    UserInputError,
    imagenet_classes,
    load_image,
)
from bbattack.cli import main
from bbattack.cli._outdir import OutDir
from bbattack.remote import HttpLabelTarget
from bbattack.service import create_app, decode_image
from bbattack.service.gateway import ASGIApp, Receive, Scope, Send
from bbattack.service.runner import serve_in_thread

GOLDEN, TABBY, ESPRESSO = 207, 281, 967
OUTPUTS = {"adv.png", "figure.png", "trace.png", "result.json", "trace.jsonl"}
RUN_FILES = {"run.json", "inputs.npz", "journal.sqlite"}  # what resume and replay need
KEY = "hardening-key-0001"


def colour_logits(x: NDArray[np.float32]) -> NDArray[np.float32]:
    m = x.mean(axis=(2, 3))
    z = np.zeros((len(x), 1000), np.float32)
    z[:, GOLDEN], z[:, TABBY], z[:, ESPRESSO] = 10 * m[:, 0], 10 * m[:, 1], 10 * m[:, 2]
    return z


def colour_model() -> CallableClassifier:
    return CallableClassifier(
        colour_logits, (3, 224, 224), 1000, class_names=imagenet_classes(), name="colour"
    )


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> CallableClassifier:
    model = colour_model()
    monkeypatch.setattr(
        cli_attack, "load_model", lambda name="efficientnet-lite0", backend="auto": model
    )
    return model


@pytest.fixture
def grey(tmp_path: Path) -> str:
    """Mean red just above green and blue: "golden retriever", one small step from "tabby"."""
    p = tmp_path / "grey.png"
    Image.new("RGB", (32, 32), (130, 128, 128)).save(p)
    return str(p)


QUICK = ["--untargeted", "--max-queries", "200", "--attack", "ql", "--param", "samples=10"]
QUICK += ["--seed", "0"]


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


def the_error(err: str) -> str:
    """The one error line among progress lines (no terminal: they are logged)."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


# ------------------------------------------------------------------ 1-3: --out


@pytest.mark.usefixtures("fake_model")
def test_1_an_out_that_is_a_file_is_refused_before_any_query(
    tmp_path: Path, grey: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(cli_session, "progress_run", lambda *a, **k: calls.append(1))
    f = tmp_path / "f"
    f.write_text("hi\n")
    assert main(["attack", grey, *QUICK, "--out", str(f)]) == 2
    assert "not a directory" in one_error_line(capsys.readouterr().err)
    assert calls == []  # the attack never started
    assert f.read_text() == "hi\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
@pytest.mark.usefixtures("fake_model")
def test_1_a_read_only_out_is_refused(
    tmp_path: Path, grey: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["attack", grey, *QUICK, "--out", str(ro)]) == 2
    finally:
        ro.chmod(0o700)
    assert "cannot write" in one_error_line(capsys.readouterr().err)
    assert list(ro.iterdir()) == []


def test_1_the_probe_refuses_an_unwritable_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root ignores permissions, so the failing write is simulated where the probe makes it.
    real_open = open

    def no_space(path: Any, mode: str = "r", *a: Any, **k: Any) -> Any:
        if "bbattack-probe" in str(path):
            raise OSError(28, "No space left on device")
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", no_space)
    with pytest.raises(UserInputError, match="No space left"), OutDir(tmp_path / "o"):
        pass
    assert not (tmp_path / "o").exists()  # made for the run, removed when refused


@pytest.mark.usefixtures("fake_model")
def test_2_an_existing_result_is_not_overwritten_without_overwrite(
    tmp_path: Path, grey: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["attack", grey, *QUICK, "--out", str(out)]) == 0
    first = (out / "result.json").read_bytes()
    capsys.readouterr()
    assert main(["attack", grey, *QUICK, "--seed", "1", "--out", str(out)]) == 2
    assert "--force" in one_error_line(capsys.readouterr().err)
    assert (out / "result.json").read_bytes() == first
    assert main(["attack", grey, *QUICK, "--seed", "1", "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "result.json").read_text())["seed"] == 1
    assert {p.name for p in out.iterdir()} == OUTPUTS | RUN_FILES


def test_2_two_attacks_cannot_hold_one_out(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with OutDir(out):
        with pytest.raises(ValueError, match="another bbattack attack"), OutDir(out):
            pass
        errors: list[str] = []

        def other() -> None:  # a second holder from another thread: flock is per open file
            try:
                with OutDir(out):
                    pass
            except ValueError as e:
                errors.append(str(e))

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert errors
        assert "another bbattack attack" in errors[0]
    with OutDir(out) as claimed:  # released: free again
        claimed.keep()


@pytest.mark.usefixtures("fake_model")
def test_3_the_default_out_is_fresh_and_printed(
    tmp_path: Path, grey: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["attack", grey, *QUICK]) == 0
    assert main(["attack", grey, *QUICK]) == 0
    runs = sorted((tmp_path / "bbattack-out").iterdir())
    assert len(runs) == 2
    err = capsys.readouterr().err
    for run in runs:
        assert {p.name for p in run.iterdir()} == OUTPUTS | RUN_FILES
        assert f"writing to {run.relative_to(tmp_path)}" in err


# ------------------------------------------------------------------ 4-5: images


def test_4_a_16_bit_png_is_scaled_by_65535(tmp_path: Path) -> None:
    p = tmp_path / "g16.png"
    Image.fromarray(np.full((16, 16), 16384, np.uint16)).save(p)
    with Image.open(p) as im:
        assert im.mode.startswith("I")
    x = load_image(p, size=8)
    assert abs(float(x.mean()) - 0.25) < 1 / 255
    assert abs(float(decode_image(p.read_bytes(), 8).mean()) - 0.25) < 1 / 255


def test_4_a_float_tiff_in_0_1_is_read_as_it_is(tmp_path: Path) -> None:
    p = tmp_path / "f.tiff"
    Image.fromarray(np.full((16, 16), 0.75, np.float32)).save(p)
    assert abs(float(load_image(p, size=8).mean()) - 0.75) < 1 / 255
    assert abs(float(decode_image(p.read_bytes(), 8).mean()) - 0.75) < 1 / 255


def test_4_a_float_tiff_outside_0_1_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "f3.tiff"
    Image.fromarray(np.full((16, 16), 3.0, np.float32)).save(p)
    with pytest.raises(ImageLoadError, match=r"values in \[3, 3\]; only floats in \[0, 1\]"):
        load_image(p)
    with pytest.raises(ImageLoadError):
        decode_image(p.read_bytes())


def _sideways(path: Path) -> None:
    """Stored 40 wide by 20 high, left half red; EXIF orientation 6 shows it rotated 90°
    clockwise: 20 wide by 40 high, red on top."""
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(path, exif=exif.tobytes(), quality=95)


def test_5_exif_orientation_is_applied_in_files_and_the_service(tmp_path: Path) -> None:
    p = tmp_path / "o6.jpg"
    _sideways(p)
    x = load_image(p, size=(40, 20))  # (H, W): upright, it is taller than wide
    assert x[0, :10].mean() > 0.9
    assert x[0, -10:].mean() < 0.1
    y = decode_image(p.read_bytes(), 20)  # square: the centre crop of the upright image
    assert y[0, :5].mean() > 0.9
    assert y[0, -5:].mean() < 0.1


# ------------------------------------------------------------------ 9-10: remote stops


class FailAfter:
    """ASGI wrapper: the first ``n`` annotate calls with images go through, then 503 forever."""

    def __init__(self, app: ASGIApp, n: int) -> None:
        self.app, self.n, self.seen = app, n, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path", "").endswith(":annotate"):
            body = b""
            while True:
                m = await receive()
                body += m.get("body", b"")
                if not m.get("more_body"):
                    break
            if b'"image"' in body:
                self.seen += 1
            if self.seen > self.n:
                await send({"type": "http.response.start", "status": 503, "headers": []})
                await send({"type": "http.response.body", "body": b"down"})
                return
            sent = False

            async def replay() -> MutableMapping[str, Any]:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = functools.partial(HttpLabelTarget, max_retries=2, backoff_base_s=0.01)
    monkeypatch.setattr(cli_remote, "HttpLabelTarget", fast)


def _remote_argv(url: str, out: Path, tmp_path: Path) -> list[str]:
    start = tmp_path / "green.png"
    Image.new("RGB", (32, 32), (0, 200, 0)).save(start)
    src = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (200, 0, 0)).save(src)
    return [
        *["attack", str(src), "--threat", "pi", "--target", "Cat"],
        *["--start-image", str(start), "--success", "topk", "--max-queries", "500"],
        *["--endpoint", f"{url}/v1/images:annotate", "--api-key", KEY, "--out", str(out)],
    ]


@pytest.fixture
def served() -> Iterator[tuple[str, Any]]:
    app = create_app(colour_model(), api_keys=[KEY], quota=40)
    with serve_in_thread(app) as url:
        yield url, app


@pytest.mark.usefixtures("fast_retries")
def test_9_a_spent_quota_stops_the_attack_with_its_result(
    tmp_path: Path, served: tuple[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    url, app = served
    out = tmp_path / "out"
    assert main(_remote_argv(url, out, tmp_path)) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "(quota)" in the_error(err)
    assert {p.name for p in out.iterdir()} == OUTPUTS | RUN_FILES
    doc = json.loads((out / "result.json").read_text())
    assert doc["stop_reason"] == "quota"
    assert doc["success"] is False  # nothing could be sent to verify it
    billed = int(app.state.usage[KEY])
    assert doc["remote"]["paid_queries"] == billed
    assert 0 < billed <= 40  # a call that would pass the quota is refused whole, unbilled


@pytest.mark.usefixtures("fast_retries")
def test_10_a_service_that_stays_down_stops_the_attack_with_its_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inner = create_app(colour_model(), api_keys=[KEY])
    app = FailAfter(inner, 3)
    out = tmp_path / "out"
    with serve_in_thread(app) as url:
        assert main(_remote_argv(url, out, tmp_path)) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "remote_unavailable" in the_error(err)
    assert "retry 1/2" in err  # shown as they happen (no terminal: one line each)
    doc = json.loads((out / "result.json").read_text())
    assert doc["stop_reason"] == "remote_unavailable"
    assert doc["remote"]["paid_queries"] == int(inner.state.usage[KEY])
    assert doc["remote"]["retries"] >= 2


def test_10_an_endpoint_that_never_answers_costs_nothing_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fast_retries: None
) -> None:
    out = tmp_path / "out"
    argv = _remote_argv("http://127.0.0.1:9", out, tmp_path)
    assert main(argv) == 3
    assert "does not answer" in one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_dry_run_touches_nothing_and_says_whether_the_endpoint_answers(
    tmp_path: Path, served: tuple[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    url, app = served
    out, journal = tmp_path / "out", tmp_path / "j.sqlite"
    argv = [*_remote_argv(url, out, tmp_path), "--dry-run", "--journal", str(journal)]
    assert main(argv) == 0
    assert "answers" in capsys.readouterr().out
    assert not out.exists()
    assert not journal.exists()
    assert int(app.state.usage.get(KEY, 0)) == 0
    bad = [a if a != KEY else "wrong-key" for a in argv]
    assert main(bad) == 2
    assert "API key" in one_error_line(capsys.readouterr().err)


# ------------------------------------------------------------------ 11-12, 14: bad values


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--param", "sigma=Infinity"], "finite"),
        (["--param", "sigma=NaN"], "finite"),
        (["--param", "max_lr=-Infinity"], "finite"),
        (["--eps", "nan"], "--eps"),
        (["--eps", "inf", "--norm", "l2"], "--eps"),
        (["--seed", str(2**70)], "--seed"),
        (["--seed", "-1"], "--seed"),
    ],
)
@pytest.mark.usefixtures("fake_model")
def test_11_12_bad_values_are_one_line_and_leave_nothing(
    extra: list[str], needle: str, tmp_path: Path, grey: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["attack", grey, *QUICK, *extra, "--out", str(out)]) == 2
    assert needle in one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_11_configs_refuse_non_finite_floats() -> None:
    from bbattack import QLConfig

    with pytest.raises(ValueError, match="finite"):
        QLConfig(sigma=float("inf"))


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_14_serve_refuses_a_bad_port(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", port, "--api-key", "k"]) == 2
    assert "--port" in one_error_line(capsys.readouterr().err)


def test_14_serve_refuses_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    from bbattack.service.server import bind

    with bind("127.0.0.1", 0) as sock:
        sock.listen()
        port = sock.getsockname()[1]
        assert main(["serve", "--port", str(port), "--api-key", "k"]) == 2
    assert "cannot listen" in one_error_line(capsys.readouterr().err)


# ------------------------------------------------------------------ smaller things


def test_a_target_equal_to_the_clean_class_says_so(
    tmp_path: Path, grey: str, capsys: pytest.CaptureFixture[str], fake_model: Any
) -> None:
    argv = ["attack", grey, "--target", str(GOLDEN), "--max-queries", "200", "--attack", "ql"]
    assert main([*argv, "--param", "samples=10", "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert "already classified as" in text
    assert "SUCCESS" not in text


@pytest.mark.usefixtures("fake_model")
def test_an_untargeted_run_shows_p_original_without_a_terminal(
    tmp_path: Path, grey: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_session, "progress_run", functools.partial(_progress, log_every_s=0.0))
    assert main(["attack", grey, *QUICK, "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "p(original)=" in err
    assert "target p=-" not in err


def _progress(*a: Any, log_every_s: float, **k: Any) -> Any:
    from bbattack.cli._progress import progress_run

    k["log_every_s"] = log_every_s
    return progress_run(*a, **k)


# ------------------------------------------------------------------ honest verdicts (issue 5)


def test_a_target_the_clean_image_already_has_is_no_success_in_result_json(
    tmp_path: Path, grey: str, capsys: pytest.CaptureFixture[str], fake_model: Any
) -> None:
    out = tmp_path / "o"
    argv = ["attack", grey, "--target", str(GOLDEN), "--max-queries", "200", "--attack", "ql"]
    assert main([*argv, "--param", "samples=10", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    doc = json.loads((out / "result.json").read_text())
    for d in (doc, printed):
        assert d["success"] is False
        assert d["stop_reason"] == "already"
        assert d["queries_at_success"] is None


@pytest.mark.parametrize("name", ["ql", "square", "pi", "lo"])
def test_the_api_calls_an_image_already_in_the_target_class_already(name: str) -> None:
    from bbattack import Labels, Oracle, Scores, TopK
    from bbattack.attacks import registry

    x = np.full((1, 3, 224, 224), 130 / 255, np.float32)
    x[:, 1:] = 128 / 255  # golden retriever (see the grey fixture)
    view = {"pi": TopK(1), "lo": Labels(1)}.get(name, Scores())
    oracle = Oracle(colour_model(), view, max_queries=300)
    start = x if name in ("pi", "lo") else None
    result = registry.build(name).run(oracle, x, GOLDEN, start=start)
    r = result.images[0]
    assert (r.success, r.stop_reason, r.queries_at_success) == (False, "already", None)
    assert result.success_rate == 0.0


def test_an_untargeted_answer_that_changes_unattacked_is_no_success() -> None:
    """The untargeted analogue: a target whose answer for the same clean image changes
    between the clean query and the final check made no attack succeed."""
    from bbattack import Oracle, Scores
    from bbattack.attacks import registry

    calls = [0]

    def fickle(x: NDArray[np.float32]) -> NDArray[np.float32]:
        calls[0] += 1
        z = np.zeros((len(x), 1000), np.float32)
        z[:, GOLDEN if calls[0] == 1 else TABBY] = 10.0
        return z

    model = CallableClassifier(fickle, (3, 224, 224), 1000, class_names=imagenet_classes())
    oracle = Oracle(model, Scores(), max_queries=2)  # the clean query and the final check
    x = np.full((1, 3, 224, 224), 128 / 255, np.float32)
    r = registry.build("ql").run(oracle, x, None).images[0]
    assert (r.success, r.stop_reason, r.linf) == (False, "already", 0.0)


def test_an_older_result_json_of_an_already_target_reads_as_no_success() -> None:
    from bbattack import ImageResult

    old = {
        **{"index": 0, "success": True, "queries": 2, "queries_at_success": 1},
        **{"queries_by_kind": {"init": 1, "final": 1}, "linf": 0.0, "l2": 0.0, "eps": 0.05},
        **{"original": {"id": GOLDEN}, "target": {"id": GOLDEN}, "final_topk": []},
        **{"steps": 0, "stop_reason": "success", "wall_time_s": 0.1, "seed": 0},
    }
    r = ImageResult.model_validate(old)
    assert (r.success, r.stop_reason, r.queries_at_success) == (False, "already", None)
    real = {**old, "target": {"id": TABBY}, "linf": 0.03, "l2": 1.0}
    assert ImageResult.model_validate(real).success is True


@pytest.mark.usefixtures("fast_retries")
def test_resume_after_a_spent_quota_goes_on_and_pays_only_what_the_journal_lacks(
    tmp_path: Path, served: tuple[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    url, app = served
    out = tmp_path / "out"
    argv = _remote_argv(url, out, tmp_path)
    assert main(argv) == 3
    assert "--resume" in the_error(capsys.readouterr().err)  # the way on
    app.state.ledger.quota = None  # the key's quota is renewed
    assert main([*argv[:-2], "--resume", str(out)]) == 0
    assert "stopped early (quota)" in capsys.readouterr().err
    doc = json.loads((out / "result.json").read_text())
    # The same run, unbroken, against a service without a quota.
    fresh = create_app(colour_model(), api_keys=[KEY])
    with serve_in_thread(fresh) as url2:
        assert main(_remote_argv(url2, tmp_path / "whole", tmp_path)) == 0
    whole = json.loads((tmp_path / "whole" / "result.json").read_text())
    assert doc["stop_reason"] == whole["stop_reason"] != "quota"
    for key in ("success", "queries", "queries_at_success", "final_topk", "linf"):
        assert doc[key] == whole[key], key
    billed = int(app.state.usage[KEY])
    assert billed == int(fresh.state.usage[KEY])  # no query paid twice
    assert doc["remote"]["paid_queries"] == billed


@pytest.mark.usefixtures("fake_model")
def test_resume_of_a_finished_result_offers_the_way_on(
    tmp_path: Path, grey: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    assert main(["attack", grey, *QUICK, "--out", str(out)]) == 0
    before = (out / "result.json").read_text()
    capsys.readouterr()
    assert main(["attack", grey, *QUICK, "--resume", str(out)]) == 0
    said = capsys.readouterr().out
    assert "nothing to resume" in said
    assert f"--out {out} --force" in said
    assert "journal" in said
    assert (out / "result.json").read_text() == before


def test_k_beyond_the_classes_is_refused_before_any_query(
    tmp_path: Path, grey: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = [0]

    def counted(x: NDArray[np.float32]) -> NDArray[np.float32]:
        calls[0] += 1
        return colour_logits(x)

    model = CallableClassifier(counted, (3, 224, 224), 1000, class_names=imagenet_classes())
    monkeypatch.setattr(cli_attack, "load_model", lambda name="", backend="auto": model)
    out = tmp_path / "o"
    argv = ["attack", grey, "--threat", "pi", "--target", str(TABBY), "--k", "100000"]
    assert main([*argv, "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--k 100000" in line
    assert "1000 classes" in line
    assert calls[0] == 0
    assert not out.exists()


@pytest.mark.usefixtures("fake_model")
def test_checkpoint_every_off_is_accepted_by_attack_as_by_bench(tmp_path: Path, grey: str) -> None:
    out = tmp_path / "o"
    argv = ["attack", grey, *QUICK, "--checkpoint-every", "off"]
    assert main([*argv, "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == OUTPUTS | RUN_FILES
