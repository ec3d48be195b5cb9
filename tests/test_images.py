"""Image I/O at the edges and the 8-bit quantisation that keeps results inside the ε box."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray
from PIL import Image

from bbattack import ImageLoadError, UserInputError, bundled_photos, load_image, quantize, save_png

FloatArray = NDArray[np.float32]
UInt8Array = NDArray[np.uint8]


def on_grid(u: UInt8Array) -> FloatArray:
    """uint8 values as [0, 1] floats, exactly as load_image computes them."""
    out: FloatArray = u.astype(np.float32) / np.float32(255.0)
    return out


def write_real_png(path: Path, size: tuple[int, int] = (48, 32)) -> UInt8Array:
    rgb = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, format="PNG")
    return rgb


# ---------------------------------------------------------------- load_image


def test_load_image_gives_float32_chw_in_unit_range(tmp_path: Path) -> None:
    p = tmp_path / "rgb.png"
    write_real_png(p)
    x = load_image(p, size=16)
    assert x.shape == (3, 16, 16)
    assert x.dtype == np.float32
    assert x.flags.c_contiguous
    assert 0.0 <= x.min() <= x.max() <= 1.0


def test_load_image_size_is_height_width(tmp_path: Path) -> None:
    p = tmp_path / "rgb.png"
    write_real_png(p)
    assert load_image(p, size=(10, 20)).shape == (3, 10, 20)


def test_grayscale_and_rgba_files_load_as_rgb(tmp_path: Path) -> None:
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(gray).save(tmp_path / "gray.png")
    x = load_image(tmp_path / "gray.png", size=8)
    assert x.shape == (3, 8, 8)
    assert np.array_equal(x[0], on_grid(gray))
    assert np.array_equal(x[0], x[2])
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 1] = 200
    rgba[..., 3] = 255
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    y = load_image(tmp_path / "rgba.png", size=8)
    assert y.shape == (3, 8, 8)
    assert np.allclose(y[1], 200 / 255)


def test_bundled_photos_load() -> None:
    photos = bundled_photos()
    for name in ("coffee", "chelsea", "astronaut", "grace_hopper"):
        assert name in photos
        assert photos[name].is_file()
    x = load_image(photos["coffee"])
    assert x.shape == (3, 224, 224)


def test_a_missing_file_raises_image_load_error(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_a_directory_raises_image_load_error(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(tmp_path)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("notes.txt", b"hello, I am not an image\n"),
        ("fake.png", b"plain text\n"),
        ("empty.png", b""),
    ],
)
def test_a_non_image_file_raises_image_load_error(
    tmp_path: Path, name: str, content: bytes
) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(ImageLoadError, match="not a recognised image"):
        load_image(p)


@pytest.mark.parametrize("source", ["written", "coffee"])
def test_a_truncated_png_raises_image_load_error(tmp_path: Path, source: str) -> None:
    if source == "written":
        full = tmp_path / "full.png"
        write_real_png(full, size=(64, 64))
        data = full.read_bytes()
    else:
        data = bundled_photos()["coffee"].read_bytes()
    p = tmp_path / "half.png"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="cannot decode"):
        load_image(p)


def test_a_truncated_jpeg_raises_image_load_error(tmp_path: Path) -> None:
    data = bundled_photos()["grace_hopper"].read_bytes()
    p = tmp_path / "half.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError):
        load_image(p)


def test_image_load_errors_are_user_input_errors(tmp_path: Path) -> None:
    with pytest.raises(UserInputError):
        load_image(tmp_path / "missing.png")


# ---------------------------------------------------------------- save_png


@settings(max_examples=25, deadline=None)
@given(u=hnp.arrays(np.uint8, st.tuples(st.just(3), st.integers(1, 12), st.integers(1, 12))))
def test_save_png_round_trips_8bit_images(u: UInt8Array) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.png"
        x = on_grid(u)
        save_png(x, p)
        assert os.listdir(d) == ["x.png"]  # no temporary file left behind
        with Image.open(p) as im:
            assert im.mode == "RGB"
            assert im.size == (u.shape[2], u.shape[1])
        y = load_image(p, size=(u.shape[1], u.shape[2]))
    assert np.array_equal(y, x)


def test_save_png_rounds_to_the_nearest_level_and_clips(tmp_path: Path) -> None:
    x = np.array([0.0, 0.5 / 255 - 1e-4, 0.5 / 255 + 1e-4, 0.999, 1.0, -0.2, 1.7, 0.5])
    img = np.broadcast_to(x.astype(np.float32), (3, 1, 8)).copy()
    save_png(img, tmp_path / "r.png")
    with Image.open(tmp_path / "r.png") as im:
        got = np.asarray(im)[0, :, 0]
    assert got.tolist() == [0, 0, 1, 255, 255, 0, 255, 128]


def test_save_png_overwrites_atomically(tmp_path: Path) -> None:
    p = tmp_path / "x.png"
    save_png(np.zeros((3, 4, 4), np.float32), p)
    save_png(np.ones((3, 4, 4), np.float32), p)
    assert sorted(os.listdir(tmp_path)) == ["x.png"]
    assert load_image(p, size=4).min() == 1.0


def test_save_png_writes_single_channel_images(tmp_path: Path) -> None:
    u = np.arange(12, dtype=np.uint8).reshape(1, 3, 4) * 20
    save_png(on_grid(u), tmp_path / "g.png")
    assert np.array_equal(load_image(tmp_path / "g.png", size=(3, 4))[0], on_grid(u[0]))


# ---------------------------------------------------------------- quantize


@st.composite
def quantize_cases(draw: st.DrawFn) -> tuple[FloatArray, FloatArray, NDArray[np.float64]]:
    n = draw(st.integers(1, 3))
    shape = (n, draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    x0 = on_grid(draw(hnp.arrays(np.uint8, shape)))
    x = draw(
        hnp.arrays(
            np.float32,
            shape,
            elements=st.floats(-0.5, 1.5, width=32, allow_nan=False, allow_infinity=False),
        )
    )
    radius = np.array(
        draw(st.lists(st.floats(1e-7, 1.0), min_size=n, max_size=n)), dtype=np.float64
    )
    return x, x0, radius


def assert_on_grid(q: FloatArray) -> None:
    scaled = q.astype(np.float64) * 255.0
    assert np.abs(scaled - np.rint(scaled)).max() < 1e-4
    assert q.min() >= 0.0
    assert q.max() <= 1.0


@settings(max_examples=300, deadline=None)
@given(quantize_cases())
def test_quantize_stays_in_the_box_and_lands_on_the_grid(
    case: tuple[FloatArray, FloatArray, NDArray[np.float64]],
) -> None:
    x, x0, radius = case
    q = quantize(x, x0, radius)
    assert q.shape == x.shape
    assert q.dtype == np.float32
    assert_on_grid(q)
    dist = np.abs(q.astype(np.float64) - x0.astype(np.float64)).reshape(len(x), -1).max(axis=1)
    assert (dist <= radius + 1e-6).all()


@settings(max_examples=200, deadline=None)
@given(quantize_cases())
def test_quantize_is_idempotent_and_moves_at_most_one_level(
    case: tuple[FloatArray, FloatArray, NDArray[np.float64]],
) -> None:
    x, x0, radius = case
    # Points already on the grid and inside the box are kept exactly.
    inside = quantize(x, x0, radius)
    assert np.array_equal(quantize(inside, x0, radius), inside)
    # And quantisation never moves a point more than half a level plus the box clip.
    r = radius.reshape(-1, 1, 1, 1)
    clipped = np.clip(np.clip(x.astype(np.float64), x0 - r, x0 + r), 0.0, 1.0)
    assert np.abs(inside - clipped).max() <= 1.0 / 255.0 + 1e-6


@settings(max_examples=200, deadline=None)
@given(
    x0=hnp.arrays(
        np.float32, (2, 1, 3, 3), elements=st.floats(0.0, 1.0, width=32, allow_nan=False)
    ),
    x=hnp.arrays(
        np.float32, (2, 1, 3, 3), elements=st.floats(-0.25, 1.25, width=32, allow_nan=False)
    ),
    radius=st.floats(1.0 / 255.0, 1.0),
)
def test_quantize_stays_in_the_box_around_off_grid_originals(
    x0: FloatArray, x: FloatArray, radius: float
) -> None:
    q = quantize(x, x0, np.full(2, radius))
    assert_on_grid(q)
    assert np.abs(q.astype(np.float64) - x0.astype(np.float64)).max() <= radius + 1e-6


GREY_LEVELS = on_grid(np.arange(256, dtype=np.uint8)).reshape(256, 1, 1, 1)


def test_quantize_with_zero_radius_keeps_on_grid_originals() -> None:
    q = quantize(GREY_LEVELS, GREY_LEVELS, np.zeros(256))
    assert np.array_equal(q, GREY_LEVELS)


def test_quantize_reaches_an_on_grid_box_edge() -> None:
    eps = 8.0 / 255.0
    x = np.clip(GREY_LEVELS - np.float32(eps), 0.0, 1.0)
    q = quantize(x, GREY_LEVELS, np.full(256, eps))
    want = np.clip(np.arange(256) - 8, 0, 255)
    assert np.rint(q.reshape(-1).astype(np.float64) * 255.0).astype(int).tolist() == want.tolist()
