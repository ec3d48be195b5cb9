"""A Cloud-Vision-style label service over bbattack's classifiers: a real HTTP attack target.

app = create_app(load_model(), api_keys=["secret"], quota=10_000, rate=5.0)
serve(port=8080, api_keys=["secret"])       # or: python -m bbattack.service --key secret
"""

from ..targets.labels import (
    DEFAULT_MAX_RESULTS,
    DEFAULT_THRESHOLD,
    LabelAnnotation,
    LabelIndex,
    imagenet_hierarchy,
)
from .app import DEFAULT_MAX_BODY_BYTES, MAX_IMAGES_PER_CALL, create_app, serve
from .decode import decode_base64, decode_image
from .errors import ApiError
from .gateway import KeyLedger

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_RESULTS",
    "DEFAULT_THRESHOLD",
    "MAX_IMAGES_PER_CALL",
    "ApiError",
    "KeyLedger",
    "LabelAnnotation",
    "LabelIndex",
    "create_app",
    "decode_base64",
    "decode_image",
    "imagenet_hierarchy",
    "serve",
]
