"""Untrusted request bytes in, model inputs out: base64 as Cloud Vision accepts it, and images
decoded like :func:`bbattack.images.load_image` (centre crop to a square, bilinear resize)."""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from ..errors import ImageLoadError
from ..images import as_rgb, to_model_input

__all__ = ["ALLOWED_FORMATS", "MAX_PIXELS", "decode_base64", "decode_image"]

FloatArray = NDArray[np.float32]

# The formats Cloud Vision documents that Pillow reads itself. Others (EPS runs Ghostscript,
# for one) are no business of a network service.
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "ICO", "TIFF")
# Decoded size cap, checked from the header before any pixel is decoded: a few kilobytes of
# PNG can otherwise expand to gigabytes. 25 MP is a large photo; labels need 224 x 224.
MAX_PIXELS = 25_000_000

_URLSAFE = bytes.maketrans(b"-_", b"+/")


def decode_base64(text: str) -> bytes:
    """Decode base64 as protobuf's JSON mapping does: standard or URL-safe alphabet, padding
    optional. Raises ValueError on anything else (stray characters, impossible lengths)."""
    if not text.isascii():
        raise ValueError("not base64: non-ASCII characters")
    raw = text.encode("ascii").translate(_URLSAFE).rstrip(b"=")
    if len(raw) % 4 == 1:
        raise ValueError("not base64: impossible length")
    try:
        return base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except binascii.Error as e:
        raise ValueError(f"not base64: {e}") from None


def decode_image(data: bytes, size: int = 224) -> FloatArray:
    """Decode image bytes to float32 CHW RGB in [0, 1], centre-cropped and resized to ``size``.

    Mirrors :func:`bbattack.images.load_image` for a square target. Raises ImageLoadError for
    anything that is not a decodable image of an allowed format and size.
    """
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as im:
            w, h = im.size
            if w < 1 or h < 1:
                raise ImageLoadError("empty image")
            if w * h > MAX_PIXELS:
                raise ImageLoadError(f"image too large: {w}x{h} pixels")
            im.load()
            rgb = as_rgb(im)
    except ImageLoadError:
        raise
    # Decoders fail on hostile bytes in many ways (OSError, ValueError, struct.error,
    # EOFError, ...): every one of them means bad image data, never a server error.
    except Exception as e:  # noqa: BLE001
        raise ImageLoadError(f"cannot decode image ({type(e).__name__})") from None
    return to_model_input(rgb, (size, size))
