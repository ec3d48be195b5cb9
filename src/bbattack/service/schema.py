"""Request and response bodies of ``images:annotate``, a subset of Cloud Vision's v1 REST API.

Parsed as proto3 JSON is (what Google's own clients send): JSON names are camelCase, and
snake_case is accepted too; enums come as names or as numbers (``"type": 4``, which
``google-cloud-vision`` sends under ``$alt=json;enum-encoding=int``); ``int32`` fields as
numbers or decimal strings; ``null`` means the field's default. Unknown fields are rejected, as
the proto3 JSON mapping says a parser does by default and as Google's front end does
("Unknown name ...: Cannot find field.").
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

__all__ = [
    "AnnotateImageRequest",
    "AnnotateImageResponse",
    "BatchAnnotateImagesRequest",
    "BatchAnnotateImagesResponse",
    "EntityAnnotation",
    "ErrorBody",
    "ErrorDetail",
    "Feature",
    "FeatureType",
    "HealthResponse",
    "Image",
    "ImageSource",
    "Status",
]

# Cloud Vision's Feature.Type values; only LABEL_DETECTION is served.
FeatureType = Literal[
    "TYPE_UNSPECIFIED",
    "FACE_DETECTION",
    "LANDMARK_DETECTION",
    "LOGO_DETECTION",
    "LABEL_DETECTION",
    "TEXT_DETECTION",
    "DOCUMENT_TEXT_DETECTION",
    "SAFE_SEARCH_DETECTION",
    "IMAGE_PROPERTIES",
    "CROP_HINTS",
    "WEB_DETECTION",
    "PRODUCT_SEARCH",
    "OBJECT_LOCALIZATION",
]


# Their numbers in google.cloud.vision.v1.Feature.Type.
_FEATURE_NUMBER = dict(
    zip(get_args(FeatureType), (0, 1, 2, 3, 4, 5, 11, 6, 7, 9, 10, 12, 19), strict=True)
)
_FEATURE_NAME = {n: name for name, n in _FEATURE_NUMBER.items()}


def _enum_name(value: object) -> object:
    """An enum given by number (or a decimal string, as protobuf's JSON parser takes it) ->
    its name; a name, or anything else, is left for the Literal to check."""
    if isinstance(value, str) and value.isdecimal():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return _FEATURE_NAME.get(value, value)
    return value


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        # proto3 JSON: a null field value means the field's default.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class Feature(_Message):
    """What to detect in an image; ``maxResults`` 0 means the default (10). ``type`` is a name
    or its proto number (4 is LABEL_DETECTION)."""

    type: Annotated[FeatureType, BeforeValidator(_enum_name)] = "TYPE_UNSPECIFIED"
    max_results: int = Field(default=0, ge=0, le=1000)
    model: str = ""


class ImageSource(_Message):
    """A remote image. Accepted by the schema, but this service fetches nothing."""

    image_uri: str = ""
    gcs_image_uri: str = ""


class Image(_Message):
    """The image: base64 bytes in ``content`` (standard or URL-safe alphabet)."""

    content: str | None = Field(default=None, json_schema_extra={"format": "byte"})
    source: ImageSource | None = None


class AnnotateImageRequest(_Message):
    """One image and the features wanted for it."""

    image: Image | None = None
    features: list[Feature] = Field(default_factory=list)
    image_context: dict[str, Any] | None = None


class BatchAnnotateImagesRequest(_Message):
    """Several images in one call, answered in order."""

    requests: list[AnnotateImageRequest]
    parent: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


class EntityAnnotation(_Message):
    """A label: ``mid`` is ``/wn/<WordNet id>``; ``score`` its probability, ``topicality`` its
    rank key (the score down-weighted by how many classes the label covers)."""

    mid: str
    description: str
    score: float
    topicality: float


class Status(_Message):
    """A google.rpc.Status: gRPC code (3 INVALID_ARGUMENT, 12 UNIMPLEMENTED) and message."""

    code: int
    message: str


class AnnotateImageResponse(_Message):
    """Labels for one image, or the error that image met. Empty fields are left out."""

    label_annotations: list[EntityAnnotation] | None = None
    error: Status | None = None


class BatchAnnotateImagesResponse(_Message):
    """One response per request, in request order."""

    responses: list[AnnotateImageResponse]


class ErrorDetail(_Message):
    """The HTTP error envelope of Google APIs."""

    code: int
    message: str
    status: str
    details: list[dict[str, Any]] = Field(default_factory=list)


class ErrorBody(_Message):
    """``{"error": {"code", "message", "status", "details"}}``."""

    error: ErrorDetail


class HealthResponse(_Message):
    status: Literal["ok"]
    model: str
