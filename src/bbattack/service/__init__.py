"""A label service over bbattack's classifiers, in the wire format of a cloud label API
(Google Cloud Vision by default; AWS Rekognition, Azure AI Vision, Clarifai, Hugging Face):
a real HTTP attack target.

app = create_app(load_model(), api_keys=["secret"], quota=10_000, rate=5.0)
app = create_app(load_model(), api_keys=["AKID:SECRET"], schema="rekognition")
serve(port=8080, api_keys=["secret"], schema="azure")
"""

from ..targets.labels import (
    DEFAULT_MAX_RESULTS,
    DEFAULT_THRESHOLD,
    LabelAnnotation,
    LabelIndex,
    imagenet_hierarchy,
)
from .app import DEFAULT_MAX_BODY_BYTES, MAX_IMAGES_PER_CALL, create_app, serve
from .core import Labeller
from .decode import decode_base64, decode_image
from .errors import ApiError
from .gateway import KeyLedger
from .wire import SCHEMAS, Wire

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_RESULTS",
    "DEFAULT_THRESHOLD",
    "MAX_IMAGES_PER_CALL",
    "SCHEMAS",
    "ApiError",
    "KeyLedger",
    "LabelAnnotation",
    "LabelIndex",
    "Labeller",
    "Wire",
    "create_app",
    "decode_base64",
    "decode_image",
    "imagenet_hierarchy",
    "serve",
]
