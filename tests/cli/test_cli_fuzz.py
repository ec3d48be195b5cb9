"""Issue 14: the attack command never ends in a traceback and never leaves output behind on a
refusal, whatever the flags and whatever the image file (bit depths, modes, EXIF orientations,
truncations). Hypothesis, bounded; the model is the fake colour model of test_hardening.

The image fuzz runs with valid flags, so that every example's bytes reach load_image (a spy
on the CLI's load_image counts the calls); the flag fuzz runs on a valid image."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_hardening import OUTPUTS, RUN_FILES, colour_model

import bbattack.cli.attack as cli_attack
from bbattack import CallableClassifier, load_image
from bbattack.cli import main
from bbattack.errors import ImageLoadError

MODES = ["RGB", "RGBA", "L", "LA", "P", "1", "I;16", "I", "F", "CMYK"]


@st.composite
def image_bytes(draw: st.DrawFn) -> tuple[str, bytes]:
    mode = draw(st.sampled_from(MODES))
    w, h = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if mode == "F":
        a = rng.random((h, w), dtype=np.float32) * draw(st.sampled_from([1.0, 3.0, -1.0]))
        im = Image.fromarray(a)
    elif mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    elif mode == "I":
        im = Image.fromarray(rng.integers(0, 2**20, (h, w)).astype(np.int32))
    else:
        im = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)
    fmt = draw(st.sampled_from(["PNG", "TIFF", "JPEG", "BMP", "GIF", "WEBP"]))
    exif = Image.Exif()
    exif[0x0112] = draw(st.integers(0, 9))
    buf = io.BytesIO()
    try:
        im.save(buf, format=fmt, exif=exif.tobytes())
    except (OSError, ValueError, KeyError, TypeError):
        buf = io.BytesIO()
        im.convert("RGB").save(buf, format="PNG")
        fmt = "PNG"
    data = buf.getvalue()
    cut = draw(st.sampled_from([None, None, 0.5, 0.9]))
    if cut is not None:
        data = data[: int(len(data) * cut)]
    return fmt.lower(), data


# Flags that pass every check made before the image is read (the default attack under
# --threat ql is Square, and p_init is one of its parameters): with these, the fuzzed bytes
# reach load_image in every example.
VALID = {"--eps": "0.05", "--seed": "7", "--max-queries": "30", "--param": "p_init=0.1"}
VALID_FLAGS = [arg for flag in VALID.items() for arg in flag]

# Values to fuzz each flag with, valid and not.
FUZZ = {
    "--eps": ["0.05", "0", "-1", "2", "nan", "inf", "1e-9", "x"],
    "--seed": ["0", "-1", str(2**63), str(2**70), "7"],
    "--max-queries": ["1", "0", "3", "60", "-5"],
    "--k": ["1", "0", "5"],
    "--param": ["p_init=0.1", "p_init=NaN", "p_init=Infinity", "samples=10", "x", "=1", "lr=[1,"],
    "--norm": ["linf", "l2", "l3"],
}


@st.composite
def flag_sets(draw: st.DrawFn) -> dict[str, str]:
    """The valid flags with up to three of them (or --k, --norm) fuzzed: often all valid, so
    that good runs are fuzzed too, not only refusals."""
    names = draw(st.sets(st.sampled_from(sorted(FUZZ)), max_size=3))
    return {**VALID, **{n: draw(st.sampled_from(FUZZ[n])) for n in sorted(names)}}


def fake_load_model(
    name: str = "efficientnet-lite0", *, backend: str = "auto", batch_size: int | None = None
) -> CallableClassifier:
    """load_model's signature (the CLI calls ``load_model(name, backend=...)``), giving the
    fake colour model of test_hardening."""
    return colour_model()


class Spy:
    """Wraps the CLI's load_image: every path it was given, and the error each call raised
    (None: the image decoded)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Path, ImageLoadError | None]] = []

    def __call__(self, path: str | os.PathLike[str], size: int | tuple[int, int] = 224) -> Any:
        try:
            x = load_image(path, size)
        except ImageLoadError as e:
            self.calls.append((Path(path), e))
            raise
        self.calls.append((Path(path), None))
        return x


def attack_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> tuple[int, str, Spy]:
    spy = Spy()
    monkeypatch.setattr(cli_attack, "load_model", fake_load_model)
    monkeypatch.setattr(cli_attack, "load_image", spy)
    capsys.readouterr()
    rc = main(argv)
    return rc, capsys.readouterr().err, spy


def one_error_line(err: str) -> str:
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert len(err.strip().splitlines()) == 1, err
    return errors[0]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(image=image_bytes(), untargeted=st.booleans())
def test_fuzzed_image_files_go_through_load_image_and_never_traceback(
    image: tuple[str, bytes],
    untargeted: bool,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ext, data = image
        src = Path(tmp) / f"img.{ext}"
        src.write_bytes(data)
        out = Path(tmp) / "out"
        argv = ["attack", str(src), "--out", str(out), *VALID_FLAGS]
        argv += ["--untargeted"] if untargeted else ["--target", "tabby"]
        rc, err, spy = attack_cli(monkeypatch, capsys, argv)
        event(f"exit {rc}")  # --hypothesis-show-statistics: both outcomes occur
        # The flags are valid: the bytes were decoded (or refused) by load_image, once.
        assert [p for p, _ in spy.calls] == [src]
        ((_, failure),) = spy.calls
        assert "Traceback" not in err
        assert rc in (0, 2), (rc, err)
        if rc == 2:
            # Refused by the decoder, with its one-line message naming the file.
            assert failure is not None, err
            assert one_error_line(err) == f"error: {failure}"
            assert str(src) in err
            assert not out.exists()
        else:
            assert failure is None
            assert {p.name for p in out.iterdir()} == OUTPUTS | RUN_FILES


@pytest.mark.parametrize(
    ("cut", "rc"), [(None, 0), (0.5, 2), (0.0, 2)], ids=["whole", "truncated", "empty"]
)
def test_a_png_decodes_and_a_damaged_one_is_the_decoders_one_line_refusal(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    cut: float | None,
    rc: int,
) -> None:
    """Both ends of the fuzzed test above, on fixed bytes: a whole PNG is attacked, a
    truncated or empty one is refused by load_image, before any output is written."""
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, format="PNG")
    data = buf.getvalue()
    src = tmp_path / "img.png"
    src.write_bytes(data if cut is None else data[: int(len(data) * cut)])
    out = tmp_path / "out"
    argv = ["attack", str(src), "--out", str(out), "--target", "tabby", *VALID_FLAGS]
    got, err, spy = attack_cli(monkeypatch, capsys, argv)
    assert got == rc, err
    assert [p for p, _ in spy.calls] == [src]
    ((_, failure),) = spy.calls
    if rc == 0:
        assert failure is None
        assert {p.name for p in out.iterdir()} == OUTPUTS | RUN_FILES
    else:
        assert isinstance(failure, ImageLoadError)
        assert one_error_line(err) == f"error: {failure}"
        assert not out.exists()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(flags=flag_sets(), untargeted=st.booleans())
def test_fuzzed_flags_never_traceback_nor_leave_output_on_refusal(
    flags: dict[str, str],
    untargeted: bool,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fuzzed flags on a valid image: a bad flag is refused in one line with nothing
    written; a run with good flags reads the image once and writes its outputs."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "img.png"
        Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(src)
        out = Path(tmp) / "out"
        argv = ["attack", str(src), "--out", str(out)]
        argv += ["--untargeted"] if untargeted else ["--target", "tabby"]
        for k, v in flags.items():
            argv += [k, v]
        rc, err, spy = attack_cli(monkeypatch, capsys, argv)
        event(f"exit {rc}")
        assert "Traceback" not in err
        assert rc in (0, 2), (rc, err)
        assert all(failure is None for _, failure in spy.calls)  # the image is fine
        if rc == 2:
            one_error_line(err)
            assert not out.exists()
        else:
            assert [p for p, _ in spy.calls] == [src]
            assert {p.name for p in out.iterdir()} == OUTPUTS | RUN_FILES
