"""The label APIs the service can speak, one module each (``bbattack serve --schema NAME``).

| name | API | auth | images a call |
|---|---|---|---|
| ``gcv`` | Google Cloud Vision ``images:annotate`` | ``X-Goog-Api-Key`` / ``?key=`` | 16 |
| ``rekognition`` | AWS Rekognition ``DetectLabels`` | SigV4 (``AKID:SECRET``) | 1 |
| ``azure`` | Azure AI Vision 4.0 ``imageanalysis:analyze`` | ``Ocp-Apim-Subscription-Key`` | 1 |
| ``clarifai`` | Clarifai ``PostModelOutputs`` | ``Authorization: Key PAT`` | 128 |
| ``hf`` | Hugging Face inference, image-classification | ``Authorization: Bearer`` | 1 |
"""

from __future__ import annotations

from ...errors import UserInputError
from .azure import AzureVision
from .base import Context, Wire
from .clarifai import Clarifai
from .gcv import GoogleVision
from .hf import HuggingFace
from .rekognition import Rekognition

__all__ = ["SCHEMAS", "Context", "Wire", "make_wire"]

SCHEMAS: dict[str, type[Wire]] = {
    w.name: w for w in (GoogleVision, Rekognition, AzureVision, Clarifai, HuggingFace)
}


def make_wire(name: str) -> Wire:
    """A fresh wire of schema ``name``; UserInputError for an unknown one."""
    try:
        return SCHEMAS[name]()
    except KeyError:
        raise UserInputError(
            f"unknown schema {name!r}: choose one of {', '.join(SCHEMAS)}"
        ) from None
