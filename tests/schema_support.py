"""The label APIs of issue 28 as the end-to-end tests attack them (tests/cli/test_schema_e2e.py,
tests/remote/test_billing_kill_schemas.py): for each ``bbattack attack --schema``, the
``bbattack serve --schema`` it is pointed at, the endpoint's path, a key, the identity the
service bills, and how the API spells the tabby class of the colour model
(tests/crash_driver.py: golden retriever / tabby / espresso from the mean red / green / blue).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from PIL import Image

from bbattack import Classifier
from bbattack.service import create_app

__all__ = ["APIS", "GOLDISH", "GREEN", "MAGENTA", "Api", "label_app", "solid"]

# A sure golden retriever whose projection into an ε = 0.15 ball around it is a sure tabby
# (p ≈ 0.7 once green passes red), and the green start image of a targeted attack.
GOLDISH, GREEN = (255, 204, 0), (0, 255, 0)
# A golden retriever (p ≈ 0.67) a little more blue turns into an espresso: untargeted.
MAGENTA = (255, 0, 235)


@dataclass(frozen=True)
class Api:
    """One ``--schema`` of ``bbattack attack`` and the service that answers it.

    ``tabby``: the tabby class as the API spells it (Google and Rekognition capitalise,
    Azure and Clarifai give lower case, Hugging Face the model's own class name);
    ``success``: where the target can show. Flat APIs list coarse labels ("animal") with at
    least the score of the fine ones and are read best first, so a fine label is never top-1
    there; Google ranks by topicality, Hugging Face has no coarse labels."""

    schema: str
    serves: str
    path: str
    key: str
    tabby: str
    success: str
    options: tuple[str, ...] = ()

    @property
    def billed_as(self) -> str:
        """The identity the service bills (Rekognition: the access key id)."""
        return self.key.split(":")[0] if self.serves == "rekognition" else self.key

    def argv(self, url: str) -> list[str]:
        """``bbattack attack``'s flags for this API served at ``url``."""
        return [
            *["--endpoint", url + self.path, "--schema", self.schema, "--api-key", self.key],
            *self.options,
        ]


APIS = {
    a.schema: a
    for a in (
        Api("gcv", "gcv", "", "gcv-e2e-key-0001", "Tabby cat", "top1"),
        Api("rekognition", "rekognition", "", "AKIDE2ETEST:e2e-secret", "Tabby cat", "topk"),
        Api("azure", "azure", "", "azure-e2e-key-0001", "tabby cat", "topk"),
        Api(
            "clarifai",
            "clarifai",
            "/v2/users/u/apps/a/models/m/outputs",
            "clarifai-e2e-pat-0001",
            "tabby cat",
            "topk",
        ),
        Api("hf", "hf", "/models/colour", "hf_e2e_token_0001", "tabby cat", "top1"),
        Api(
            "json",
            "hf",
            "/models/colour",
            "hf_e2e_token_0001",
            "tabby cat",
            "top1",
            ("--labels-path", "[*].label", "--scores-path", "[*].score"),
        ),
    )
}


def label_app(api: Api, model: Classifier, **options: Any) -> FastAPI:
    """``bbattack serve --schema`` for ``api`` on ``model``, taking ``api.key``."""
    return create_app(model, api_keys=[api.key], schema=api.serves, **options)


def solid(path: Path, rgb: tuple[int, int, int]) -> str:
    """A 64 x 64 PNG of one colour (Azure wants 50 px a side at least); its path."""
    Image.new("RGB", (64, 64), rgb).save(path)
    return str(path)
