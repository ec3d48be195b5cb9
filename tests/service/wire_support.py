"""A fast fake classifier and a live server of any schema, for the wire-schema tests."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI
from numpy.typing import NDArray
from PIL import Image

from bbattack import CallableClassifier, imagenet_classes
from bbattack.service import create_app
from bbattack.service.runner import serve_in_thread

GOLDEN_RETRIEVER, TABBY, ESPRESSO = 207, 281, 967
# Keys per schema: Rekognition's are ACCESS_KEY_ID:SECRET.
KEYS = {
    "gcv": ["gcv-key-0001", "gcv-key-0002"],
    "rekognition": ["AKIDTESTONE:secret-one", "AKIDTESTTWO:secret-two"],
    "azure": ["azure-key-0001", "azure-key-0002"],
    "clarifai": ["clarifai-pat-0001", "clarifai-pat-0002"],
    "hf": ["hf_token_0001", "hf_token_0002"],
}


def colour_logits(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Logits 10 x mean red / green / blue for golden retriever / tabby / espresso."""
    m = x.mean(axis=(2, 3))
    z = np.zeros((len(x), 1000), np.float32)
    z[:, GOLDEN_RETRIEVER], z[:, TABBY], z[:, ESPRESSO] = 10 * m[:, 0], 10 * m[:, 1], 10 * m[:, 2]
    return z


def colour_classifier() -> CallableClassifier:
    return CallableClassifier(
        colour_logits, (3, 224, 224), 1000, class_names=imagenet_classes(), name="fake-colour"
    )


def image(rgb: tuple[int, int, int], size: tuple[int, int] = (64, 56), fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format=fmt)
    return buf.getvalue()


RED, GREEN = image((255, 0, 0)), image((0, 255, 0))


@dataclass
class Served:
    schema: str
    url: str
    app: FastAPI
    client: httpx.Client

    def usage(self, key: str) -> int:
        return int(self.app.state.usage.get(key, 0))


@contextmanager
def serving(schema: str, wrap: Any = None, **options: Any) -> Iterator[Served]:
    """A live server of ``schema`` on loopback; ``wrap(app)`` may put middleware around it."""
    app = create_app(colour_classifier(), api_keys=KEYS[schema], schema=schema, **options)
    with serve_in_thread(wrap(app) if wrap else app) as url, httpx.Client(timeout=30) as client:
        yield Served(schema, url, app, client)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def signed(
    url: str, body: bytes, akid: str, secret: str, headers: dict[str, str], stamp: str = ""
) -> dict[str, str]:
    """Headers of a SigV4-signed Rekognition call (botocore's signer, as boto3 signs), dated
    now or at ``stamp`` (``YYYYMMDDTHHMMSSZ``)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="POST", url=f"{url}/", data=body, headers=headers)
    signer = SigV4Auth(Credentials(akid, secret), "rekognition", "us-east-1")
    if not stamp:
        signer.add_auth(request)
        return dict(request.headers.items())
    # add_auth always dates a request now: sign an old one step by step.
    request.context["timestamp"] = stamp
    request.headers["X-Amz-Date"] = stamp
    canonical = signer.canonical_request(request)
    signature = signer.signature(signer.string_to_sign(request, canonical), request)
    scope = signer.scope(request)
    names = signer.signed_headers(signer.headers_to_sign(request))
    request.headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders={names}, Signature={signature}"
    )
    return dict(request.headers.items())


def call(s: Served, data: bytes, key: str | None = "", **params: Any) -> httpx.Response:
    """One labelling call of ``s``'s schema for one image (Clarifai: ``params["n"]`` copies),
    with ``key`` (default: the first key; None: no credentials)."""
    if key == "":
        key = KEYS[s.schema][0]
    if s.schema == "gcv":
        body = {"requests": [{"image": {"content": _b64(data)}, "features": [{"type": 4}]}]}
        headers = {"X-Goog-Api-Key": key} if key else {}
        return s.client.post(f"{s.url}/v1/images:annotate", json=body, headers=headers)
    if s.schema == "rekognition":
        raw = json.dumps({"Image": {"Bytes": _b64(data)}, **params}).encode()
        headers = {
            "X-Amz-Target": "RekognitionService.DetectLabels",
            "Content-Type": "application/x-amz-json-1.1",
        }
        if key:
            akid, _, secret = key.partition(":")
            headers = signed(s.url, raw, akid, secret, headers)
        return s.client.post(f"{s.url}/", content=raw, headers=headers)
    if s.schema == "azure":
        headers = {"Content-Type": "application/octet-stream"}
        if key:
            headers["Ocp-Apim-Subscription-Key"] = key
        query = {"api-version": "2023-10-01", "features": "tags"}
        return s.client.post(
            f"{s.url}/computervision/imageanalysis:analyze",
            params=query,
            content=data,
            headers=headers,
        )
    if s.schema == "clarifai":
        inputs = [{"data": {"image": {"base64": _b64(data)}}}] * int(params.get("n", 1))
        headers = {"Authorization": f"Key {key}"} if key else {}
        return s.client.post(
            f"{s.url}/v2/users/u/apps/a/models/m/outputs", json={"inputs": inputs}, headers=headers
        )
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return s.client.post(f"{s.url}/models/some/model", content=data, headers=headers)


def billed_key(schema: str, index: int = 0) -> str:
    """The identity usage is billed to (Rekognition: the access key id)."""
    return KEYS[schema][index].split(":")[0] if schema == "rekognition" else KEYS[schema][index]
