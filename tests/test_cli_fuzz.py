"""Issue 14: the attack command never ends in a traceback and never leaves output behind on a
refusal, whatever the flags and whatever the image file (bit depths, modes, EXIF orientations,
truncations). Hypothesis, bounded; the model is the fake colour model of test_hardening."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import bbattack.cli.attack as cli_attack
from bbattack.cli import main
from test_hardening import OUTPUTS, RUN_FILES, colour_model

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


FLAGS = st.fixed_dictionaries(
    {
        "--eps": st.sampled_from(["0.05", "0", "-1", "2", "nan", "inf", "1e-9", "x"]),
        "--seed": st.sampled_from(["0", "-1", str(2**63), str(2**70), "7"]),
        "--max-queries": st.sampled_from(["1", "0", "3", "60", "-5"]),
        "--k": st.sampled_from(["1", "0", "5"]),
        "--param": st.sampled_from(
            ["samples=10", "sigma=Infinity", "sigma=NaN", "samples=3", "x", "=1", "lr=[1,"]
        ),
        "--norm": st.sampled_from(["linf", "l2", "l3"]),
    }
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(image=image_bytes(), flags=FLAGS, untargeted=st.booleans())
def test_the_attack_command_never_tracebacks_nor_leaves_output_on_refusal(
    image: tuple[str, bytes],
    flags: dict[str, str],
    untargeted: bool,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = colour_model()
    monkeypatch.setattr(cli_attack, "load_model", lambda backend="auto": model)
    with tempfile.TemporaryDirectory() as tmp:
        ext, data = image
        src = Path(tmp) / f"img.{ext}"
        src.write_bytes(data)
        out = Path(tmp) / "out"
        argv = ["attack", str(src), "--out", str(out)]
        argv += ["--untargeted"] if untargeted else ["--target", "tabby"]
        for k, v in flags.items():
            argv += [k, v]
        rc = main(argv)
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert rc in (0, 2), (rc, err)
        if rc == 2:
            errors = [line for line in err.splitlines() if line.startswith("error: ")]
            assert len(errors) == 1, err
            assert not out.exists()
        else:
            assert {p.name for p in out.iterdir()} == OUTPUTS | RUN_FILES
