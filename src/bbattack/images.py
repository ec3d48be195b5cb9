"""Image I/O at the edges: files in, float32 CHW arrays in [0, 1] inside, 8-bit PNG out."""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError, StartImageError
from .results import default_mode

__all__ = [
    "as_rgb",
    "bundled_photos",
    "decode_png",
    "encode_png",
    "load_image",
    "quantize",
    "save_png",
    "start_candidates",
    "to_model_input",
    "to_uint8",
]

FloatArray = NDArray[np.float32]


def load_image(path: str | os.PathLike[str], size: int | tuple[int, int] = 224) -> FloatArray:
    """Load an image as float32 CHW RGB in [0, 1]: centre-cropped to a square, resized to ``size``.

    Raises ImageLoadError for a missing, unreadable, corrupt or non-image file.
    """
    p = Path(path)
    hw = (size, size) if isinstance(size, int) else size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                im.load()
                rgb = as_rgb(im)
    except ImageLoadError as e:
        raise ImageLoadError(f"{p}: {e}") from None
    except FileNotFoundError:
        raise ImageLoadError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ImageLoadError(f"{p}: is a directory, not an image") from None
    except PermissionError:
        raise ImageLoadError(f"{p}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{p}: not a recognised image file") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(f"{p}: cannot decode image ({e})") from None
    # Decoders fail on damaged files in many more ways (struct.error, EOFError, TypeError in a
    # broken EXIF block, ...): each one means the file cannot be read, never a bbattack bug.
    except Exception as e:  # noqa: BLE001
        raise ImageLoadError(f"{p}: cannot decode image ({type(e).__name__}: {e})") from None
    if rgb.size[0] < 1 or rgb.size[1] < 1:
        raise ImageLoadError(f"{p}: empty image")
    return to_model_input(rgb, hw)


# Integer modes wider than 8 bits, by the number of bits their values use.
_WIDE_MODES = {"I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16}


def _bits_of(im: Image.Image) -> int | None:
    """Bits per sample of a 32-bit integer ("I") image, where the file says: PNG stores at most
    16, TIFF has its BitsPerSample tag."""
    if im.format == "PNG":
        return 16
    tags = getattr(im, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    return int(bits) if isinstance(bits, int) and 8 <= bits <= 32 else None


def as_rgb(im: Image.Image) -> Image.Image:
    """An image as a person sees it, as 8-bit RGB: turned upright by its EXIF orientation, and
    scaled by its real bit depth (16-bit values by 65535; float images in [0, 1] as they are).

    Raises ImageLoadError for a float image outside [0, 1] (or not finite), and for integer
    samples of unknown depth: no scale would show them as they are meant.
    """
    im = ImageOps.exif_transpose(im) if im.getexif().get(0x0112, 1) != 1 else im
    mode = im.mode
    if mode in _WIDE_MODES or mode == "I":
        bits = _WIDE_MODES.get(mode) or _bits_of(im)
        if bits is None:
            raise ImageLoadError("32-bit integer samples of unknown bit depth")
        a = np.asarray(im, dtype=np.float64) / float(2**bits - 1)
        return _grey_to_rgb(np.clip(a, 0.0, 1.0))
    if mode == "F":
        a = np.asarray(im, dtype=np.float64)
        if not np.isfinite(a).all():
            raise ImageLoadError("float image with non-finite values (NaN or infinity)")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo < 0.0 or hi > 1.0:
            raise ImageLoadError(
                f"float image with values in [{lo:g}, {hi:g}]; only floats in [0, 1] are read"
            )
        return _grey_to_rgb(a)
    return im if mode == "RGB" else im.convert("RGB")


def _grey_to_rgb(a: NDArray[np.float64]) -> Image.Image:
    grey = np.rint(a * 255.0).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def to_model_input(rgb: Image.Image, size: tuple[int, int]) -> FloatArray:
    """Centre-crop an RGB image to the aspect ratio of ``size`` (H, W), resize it bilinearly,
    and return float32 CHW in [0, 1]. Every decoder (files, HTTP requests) goes through here."""
    w, h = rgb.size
    th, tw = size
    scale = min(w / tw, h / th)
    cw, ch = round(tw * scale), round(th * scale)
    left, top = (w - cw) // 2, (h - ch) // 2
    rgb = rgb.crop((left, top, left + cw, top + ch)).resize((tw, th), Image.Resampling.BILINEAR)
    arr = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
    return np.ascontiguousarray(arr)


def to_uint8(x: NDArray[np.floating]) -> NDArray[np.uint8]:
    """Round [0, 1] floats to 8-bit values."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def quantize(x: FloatArray, x0: FloatArray, radius: NDArray[np.floating]) -> FloatArray:
    """Round ``x`` to the 8-bit grid without leaving the L∞ box of ``radius`` around ``x0``.

    Plain rounding can push a pixel past the box edge (x0 + 0.05 is not on the grid), so the
    rounded values are clipped to the grid points inside the box. ``radius`` is per image.
    """
    r = np.asarray(radius, dtype=np.float64).reshape((-1,) + (1,) * (x.ndim - 1))
    q = np.rint(x.astype(np.float64) * 255.0)
    # float32 k/255 is off the grid by up to ~1e-5 levels: the tolerance absorbs that, and it
    # is far below one level, so the box is never widened by a grid point.
    lo = np.ceil((x0.astype(np.float64) - r) * 255.0 - 1e-4)
    hi = np.floor((x0.astype(np.float64) + r) * 255.0 + 1e-4)
    # If x0 is off the grid, the box may hold no grid point; then take the nearest one.
    hi = np.maximum(hi, lo)
    q = np.clip(np.clip(q, lo, hi), 0.0, 255.0)
    out: FloatArray = (q / 255.0).astype(np.float32)
    return out


def _pil(x: NDArray[np.floating]) -> Image.Image:
    chw = to_uint8(x)
    return Image.fromarray(chw[0]) if chw.shape[0] == 1 else Image.fromarray(chw.transpose(1, 2, 0))


def encode_png(x: NDArray[np.floating]) -> bytes:
    """A CHW [0, 1] image as 8-bit PNG bytes (lossless for images on the 8-bit grid)."""
    buf = io.BytesIO()
    _pil(x).save(buf, format="PNG")
    return buf.getvalue()


def decode_png(data: bytes) -> FloatArray:
    """PNG bytes from :func:`encode_png` back to float32 CHW in [0, 1], without resizing."""
    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im, dtype=np.float32) / np.float32(255.0)
    chw = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(chw)


def save_png(x: NDArray[np.floating], path: str | os.PathLike[str]) -> None:
    """Save a CHW [0, 1] image as an 8-bit PNG, atomically (no half-written file on a crash)."""
    p = Path(path)
    img = _pil(x)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".png")
    os.close(fd)
    try:
        img.save(tmp, format="PNG")
        os.chmod(tmp, default_mode())
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def bundled_photos() -> dict[str, Path]:
    """Real photos that ship inside installed packages (scikit-image, scikit-learn, matplotlib).

    Returns name → path for those that are installed; no download ever happens.
    """
    found: dict[str, Path] = {}
    try:
        import skimage

        d = Path(skimage.__file__).parent / "data"
        for name in (
            "astronaut.png",
            "chelsea.png",
            "coffee.png",
            "camera.png",
            "rocket.jpg",
            "motorcycle_left.png",
            "motorcycle_right.png",
            "logo.png",
            "horse.png",
            "clock_motion.png",
            "chessboard_RGB.png",
            "color.png",
            "page.png",
        ):
            if (d / name).is_file():
                found[name.rsplit(".", 1)[0]] = d / name
    except ImportError:
        pass
    try:
        import matplotlib

        gh = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
        if gh.is_file():
            found["grace_hopper"] = gh
    except ImportError:
        pass
    try:
        import sklearn

        d = Path(sklearn.__file__).parent / "datasets" / "images"
        for name in ("china.jpg", "flower.jpg"):
            if (d / name).is_file():
                found[name.rsplit(".", 1)[0]] = d / name
    except ImportError:
        pass
    return found


def start_candidates(shape: tuple[int, int, int]) -> FloatArray:
    """The bundled photos at a model's input shape (C, H, W), as start-image candidates:
    grey (luminance kept on the 8-bit grid) for 1-channel models."""
    photos = bundled_photos()
    if not photos:
        raise StartImageError("no bundled photos are installed; give a start image (--start-image)")
    if shape[0] not in (1, 3):
        raise StartImageError(
            f"bundled photos are RGB; a {shape[0]}-channel model needs a start image"
        )
    cands = np.stack([load_image(p, size=(shape[1], shape[2])) for p in photos.values()])
    if shape[0] == 1:
        grey = (cands * np.array([0.299, 0.587, 0.114], np.float32)[:, None, None]).sum(1)
        cands = (np.rint(grey * 255.0) / 255.0).astype(np.float32)[:, None]
    return cands
