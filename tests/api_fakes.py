"""Small fakes of five label APIs and a generic JSON one, written from the vendors' documented
wire formats (request, authentication, answer, errors), for ``httpx.MockTransport``.

They are independent of ``bbattack.service`` on purpose: the client and the service are two
implementations of the same documents. Each fake checks the request it gets (path, headers,
body shape, key or SigV4 signature) and answers 4xx the way its API does when something is
off, bills one image per labelled answer, and can be told to fail the next calls
(``fail_next``) with the API's own error bodies.

Every fake labels an image the same way (:func:`truth`): "Dog" (parents "Mammal", "Animal"),
"Mammal" (parent "Animal"), "Animal", with scores from the image's mean brightness, so the
tests can compare what each client decodes.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from PIL import Image

Truth = list[tuple[str, float, tuple[str, ...]]]
Handler = Callable[[httpx.Request], httpx.Response]

KEY = "test-key-0001"
AKID, SECRET = "AKIDEXAMPLE0001", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def truth(png: bytes) -> Truth:
    """What every fake answers for an image: three labels, best first, scores in [0, 1]."""
    with Image.open(io.BytesIO(png)) as im:
        m = float(np.asarray(im, np.float64).mean() / 255.0)
    dog = round(0.7 + 0.25 * m, 4)  # every label above Rekognition's default 55%
    return [
        ("Dog", dog, ("Mammal", "Animal")),
        ("Mammal", round(dog - 0.05, 4), ("Animal",)),
        ("Animal", round(dog - 0.1, 4), ()),
    ]


class Fake:
    """Shared by the fakes: the requests seen, images billed, failures to play first."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.billed = 0
        self._fail: list[Handler] = []
        self._lock = threading.Lock()

    def fail_next(self, *responses: Handler) -> None:
        """Answer the next calls with these (in order), then serve normally."""
        self._fail.extend(responses)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
            step = self._fail.pop(0) if self._fail else None
        if step is not None:
            return step(request)
        return self.serve(request)

    def bill(self, n: int) -> None:
        with self._lock:
            self.billed += n

    def serve(self, request: httpx.Request) -> httpx.Response:
        raise NotImplementedError


# --- Google Cloud Vision ------------------------------------------------------------------


def gcv_error(code: int, status: str, reason: str | None = None, **headers: str) -> Handler:
    err: dict[str, Any] = {"code": code, "message": f"google says {status}", "status": status}
    if reason:
        err["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}]
    return lambda r: httpx.Response(code, json={"error": err}, headers=headers)


class GoogleFake(Fake):
    """``POST /v1/images:annotate``, key in ``X-Goog-Api-Key``, up to 16 images."""

    def serve(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/v1/images:annotate":
            return httpx.Response(404, text="Not Found")
        if request.headers.get("x-goog-api-key") != KEY:
            return gcv_error(400, "INVALID_ARGUMENT", "API_KEY_INVALID")(request)
        reqs = json.loads(request.content)["requests"]
        if not reqs:
            return httpx.Response(200, json={})
        if len(reqs) > 16:
            return gcv_error(400, "INVALID_ARGUMENT")(request)
        out = []
        for r in reqs:
            (feature,) = r["features"]
            assert feature["type"] == "LABEL_DETECTION"
            labels = truth(base64.b64decode(r["image"]["content"]))[: int(feature["maxResults"])]
            anns = [
                {"mid": f"/m/{i}", "description": n, "score": s, "topicality": s}
                for i, (n, s, _) in enumerate(labels)
            ]
            out.append({"labelAnnotations": anns})
        self.bill(len(reqs))
        return httpx.Response(200, json={"responses": out})


# --- AWS Rekognition ----------------------------------------------------------------------


def aws_error(status: int, kind: str, **headers: str) -> Handler:
    body = {"__type": f"com.amazonaws.rekognition#{kind}", "message": f"aws says {kind}"}
    return lambda r: httpx.Response(status, json=body, headers=headers)


def signature_ok(request: httpx.Request, secrets: dict[str, str]) -> str | None:
    """None where the request's SigV4 signature is right, else the error type: recomputed
    with botocore over the headers the request says it signed."""
    auth = request.headers.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return "MissingAuthenticationTokenException"
    fields = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 ") :].split(","))
    akid, date, region, service, _ = fields["Credential"].split("/")
    if akid not in secrets:
        return "UnrecognizedClientException"
    signed = fields["SignedHeaders"].split(";")
    again = AWSRequest(
        method=request.method,
        url=str(request.url),
        data=request.content,
        headers={h: request.headers[h] for h in signed},
    )
    again.context["timestamp"] = request.headers["x-amz-date"]
    signer = SigV4Auth(Credentials(akid, secrets[akid]), service, region)
    expected = signer.signature(
        signer.string_to_sign(again, signer.canonical_request(again)), again
    )
    ok = (
        expected == fields["Signature"]
        and service == "rekognition"
        and date in again.context["timestamp"]
    )
    return None if ok else "InvalidSignatureException"


class RekognitionFake(Fake):
    """JSON 1.1 ``RekognitionService.DetectLabels`` at ``/``, SigV4 verified, one image."""

    def serve(self, request: httpx.Request) -> httpx.Response:
        why = signature_ok(request, {AKID: SECRET})
        if why is not None:
            return aws_error(403 if why == "InvalidSignatureException" else 400, why)(request)
        if request.headers.get("x-amz-target") != "RekognitionService.DetectLabels":
            return aws_error(400, "UnknownOperationException")(request)
        if request.headers.get("content-type") != "application/x-amz-json-1.1":
            return aws_error(400, "SerializationException")(request)
        body = json.loads(request.content)
        if "Image" not in body:
            return aws_error(400, "InvalidParameterException")(request)
        labels = truth(base64.b64decode(body["Image"]["Bytes"]))[: int(body.get("MaxLabels", 1000))]
        cut = float(body.get("MinConfidence", 55))
        self.bill(1)
        return httpx.Response(
            200,
            json={
                "Labels": [
                    {
                        "Name": n,
                        "Confidence": s * 100.0,
                        "Instances": [],
                        "Parents": [{"Name": p} for p in parents],
                        "Aliases": [],
                        "Categories": [{"Name": "Animals and Pets"}],
                    }
                    for n, s, parents in labels
                    if s * 100.0 >= cut
                ],
                "LabelModelVersion": "3.0",
            },
        )


# --- Azure AI Vision 4.0 ------------------------------------------------------------------


def azure_error(status: int, code: str, message: str, **headers: str) -> Handler:
    body = {"error": {"code": code, "message": message}}
    return lambda r: httpx.Response(status, json=body, headers=headers)


class AzureFake(Fake):
    """``POST /computervision/imageanalysis:analyze?api-version=2023-10-01&features=tags``."""

    def serve(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.path != "/computervision/imageanalysis:analyze":
            return azure_error(404, "404", "Resource not found")(request)
        if request.headers.get("ocp-apim-subscription-key") != KEY:
            return azure_error(401, "401", "Access denied due to invalid subscription key.")(
                request
            )
        if url.params.get("api-version") != "2023-10-01" or url.params.get("features") != "tags":
            return azure_error(400, "InvalidRequest", "bad api-version or features")(request)
        if request.headers.get("content-type") != "application/octet-stream":
            return azure_error(415, "InvalidRequest", "unsupported media type")(request)
        if not request.content:
            return azure_error(400, "InvalidRequest", "Image must be provided.")(request)
        self.bill(1)
        values = [{"name": n.lower(), "confidence": s} for n, s, _ in truth(request.content)]
        return httpx.Response(
            200,
            json={
                "modelVersion": "2023-10-01",
                "metadata": {"width": 8, "height": 8},
                "tagsResult": {"values": values},
            },
        )


# --- Clarifai -----------------------------------------------------------------------------


def clarifai_error(status: int, code: int, description: str) -> Handler:
    body = {"status": {"code": code, "description": description}}
    return lambda r: httpx.Response(status, json=body)


class ClarifaiFake(Fake):
    """``POST /v2/users/{u}/apps/{a}/models/{m}/outputs``, ``Authorization: Key PAT``.
    ``bad_input``: image indices (in a call) answered with status 30300."""

    def __init__(self) -> None:
        super().__init__()
        self.bad_input: set[int] = set()

    def serve(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/outputs"):
            return clarifai_error(404, 11101, "Resource does not exist")(request)
        if request.headers.get("authorization") != f"Key {KEY}":
            return clarifai_error(401, 11001, "Invalid authentication token")(request)
        body = json.loads(request.content)
        inputs = body.get("inputs", [])
        if not inputs:
            return clarifai_error(400, 11102, "Invalid request: inputs are required")(request)
        limit = body["model"]["output_info"]["output_config"]["max_concepts"]
        outputs: list[dict[str, Any]] = []
        for i, inp in enumerate(inputs):
            if i in self.bad_input:
                st = {"code": 30300, "description": "Input image decode failed"}
                outputs.append({"id": f"o{i}", "status": st, "data": {}})
                continue
            labels = truth(base64.b64decode(inp["data"]["image"]["base64"]))[:limit]
            concepts = [
                {"id": f"ai_{n.lower()}", "name": n.lower(), "value": s, "app_id": "main"}
                for n, s, _ in labels
            ]
            outputs.append(
                {
                    "id": f"o{i}",
                    "status": {"code": 10000, "description": "Ok"},
                    "data": {"concepts": concepts},
                }
            )
        good = sum(1 for o in outputs if o["status"]["code"] == 10000)
        self.bill(good)
        top = 10000 if good == len(outputs) else 10010
        return httpx.Response(
            200, json={"status": {"code": top, "description": "Ok"}, "outputs": outputs}
        )


# --- Hugging Face -------------------------------------------------------------------------


def hf_error(status: int, message: str, **extra: Any) -> Handler:
    return lambda r: httpx.Response(status, json={"error": message, **extra})


class HfFake(Fake):
    """``POST /models/{id}``, ``Authorization: Bearer``, raw image body, top 5 labels."""

    def serve(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.startswith("/models/"):
            return hf_error(404, "Not Found")(request)
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return hf_error(401, "Invalid credentials in Authorization header")(request)
        if not request.content:
            return hf_error(400, "No image given")(request)
        self.bill(1)
        answer = [{"label": n.lower(), "score": s} for n, s, _ in truth(request.content)]
        return httpx.Response(200, json=answer[:5])


# --- A generic JSON API -------------------------------------------------------------------


class JsonFake(Fake):
    """``POST /predict`` with ``{"instances": [{"b64": ...}], "top_k": N}``, key in
    ``X-Api-Key``, percentages in ``predictions[*].{label, pct}``."""

    def serve(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("x-api-key") != KEY:
            return httpx.Response(401, json={"error": {"message": "bad key"}})
        body = json.loads(request.content)
        labels = truth(base64.b64decode(body["instances"][0]["b64"]))[: int(body["top_k"])]
        self.bill(1)
        preds = [{"label": n, "pct": s * 100.0} for n, s, _ in labels]
        return httpx.Response(200, json={"predictions": preds, "model": "fake"})
