"""AWS Rekognition ``DetectLabels`` (AWS JSON 1.1 protocol, Signature Version 4).

``POST /`` with ``X-Amz-Target: RekognitionService.DetectLabels``, ``Content-Type:
application/x-amz-json-1.1`` and body ``{"Image": {"Bytes": b64}, "MaxLabels": N,
"MinConfidence": C}``; one image a call, at most 5 MB of JPEG or PNG. The answer is
``{"Labels": [{"Name", "Confidence" (0-100), "Parents": [{"Name"}], "Aliases", "Categories",
"Instances"}], "LabelModelVersion": "3.0"}``: every label's ancestors in ``Parents``.

Keys are ``AKID:SECRET``. The service recomputes each request's SigV4 signature with botocore's
signer, from the secret of the access key id named in the ``Authorization`` header's credential
scope, and compares; a request dated more than 15 minutes off is refused, as AWS refuses it.

Errors are ``{"__type": "<Name>", "message": ...}`` with HTTP 400 for the caller's faults, as
the JSON 1.1 protocol answers them: ``ThrottlingException`` (the per-key rate limit, and
injected 429 faults), ``LimitExceededException`` (the key's images are spent),
``UnrecognizedClientException`` (unknown key), ``MissingAuthenticationTokenException``,
``InvalidSignatureException``, ``ImageTooLargeException``, ``InvalidImageFormatException``,
``InvalidParameterException``; 500 ``InternalServerError``, 503 ``ServiceUnavailableException``.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import re
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.responses import Response

from ...errors import UserInputError
from ...targets.labels import LabelIndex, imagenet_hierarchy
from ..core import sniff
from ..decode import decode_base64
from ..errors import ApiError
from .base import Context, Scope, Wire, json_reply, request_body, request_key, set_billed

__all__ = ["Rekognition"]

TARGET = "RekognitionService.DetectLabels"
MAX_IMAGE_BYTES = 5 * 1024 * 1024
FORMATS = ("JPEG", "PNG")
# AWS's documented default: labels under 55% confidence are left out unless asked for.
DEFAULT_MIN_CONFIDENCE = 55.0
DEFAULT_MAX_LABELS = 1000
SKEW = dt.timedelta(minutes=15)

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<akid>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/,\s]+)/"
    r"(?P<service>[^/,\s]+)/aws4_request,\s*SignedHeaders=(?P<signed>[a-z0-9;\-]+),\s*"
    r"Signature=(?P<sig>[0-9a-f]{64})\s*$"
)

# kind -> (HTTP status, __type, message; None keeps the error's own message).
_TYPES: dict[str, tuple[int, str, str | None]] = {
    "missing_key": (400, "MissingAuthenticationTokenException", "Missing Authentication Token"),
    "bad_key": (
        400,
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    ),
    "bad_signature": (400, "InvalidSignatureException", None),
    "rate": (400, "ThrottlingException", "Rate exceeded"),
    "quota": (400, "LimitExceededException", None),
    "too_large": (413, "RequestEntityTooLargeException", None),
    "image_too_large": (400, "ImageTooLargeException", None),
    "bad_image": (400, "InvalidImageFormatException", "Request has invalid image format"),
    "timeout": (408, "RequestTimeoutException", None),
    "not_found": (404, "UnknownOperationException", None),
    "method": (405, "UnknownOperationException", None),
    "internal": (500, "InternalServerError", "Internal server error"),
    "unavailable": (503, "ServiceUnavailableException", "Service unavailable"),
    # A defence's refusals (bbattack's own types, in AWS's form; 400 as Rekognition's
    # AccessDeniedException): not retried by boto3, unlike ThrottlingException.
    "rejected": (400, "QueryRejectedException", None),
    "banned": (400, "KeyBannedException", None),
}


def _parents(index: LabelIndex) -> dict[str, list[str]]:
    """Label mid -> its ancestors' names that are labels too, nearest first."""
    tree = imagenet_hierarchy()
    known = dict(zip(index.mids, index.descriptions, strict=True))
    out: dict[str, list[str]] = {}
    for wnid, chain in tree.items():
        path = [f"/wn/{wnid}"] + [f"/wn/{a}" for a, _ in chain]
        for i, mid in enumerate(path):
            if mid in known and mid not in out:
                names = [known[m] for m in path[i + 1 :] if m in known]
                out[mid] = [n for j, n in enumerate(names) if n not in names[:j]]
    return out


class Rekognition(Wire):
    """Rekognition's DetectLabels."""

    name: ClassVar[str] = "rekognition"
    title: ClassVar[str] = "AWS Rekognition (DetectLabels)"
    max_images: ClassVar[int] = 1
    verifies_body: ClassVar[bool] = True

    def __init__(self) -> None:
        self._secrets: dict[str, bytes] = {}

    def key_ids(self, api_keys: list[str]) -> list[str]:
        for key in api_keys:
            akid, sep, secret = key.partition(":")
            if not sep or not akid or not secret:
                raise UserInputError(
                    "--schema rekognition needs keys as ACCESS_KEY_ID:SECRET_ACCESS_KEY"
                )
            self._secrets[akid] = secret.encode("utf-8")
        return list(self._secrets)

    def guarded(self, path: str) -> bool:
        return path == "/"

    def is_call(self, method: str, path: str) -> bool:
        return method == "POST" and path == "/"

    def credential(self, scope: Scope, headers: dict[bytes, bytes]) -> bytes | None:
        m = _AUTH.match(headers.get(b"authorization", b"").decode("latin-1"))
        return m["akid"].encode("latin-1") if m else None

    def verify(self, scope: Scope, headers: dict[bytes, bytes], body: bytes) -> ApiError | None:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        m = _AUTH.match(headers.get(b"authorization", b"").decode("latin-1"))
        stamp = headers.get(b"x-amz-date", b"").decode("latin-1")
        if m is None or len(stamp) != 16 or stamp[:8] != m["date"]:
            return _bad_signature("Authorization header or X-Amz-Date is malformed.")
        try:
            when = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        except ValueError:
            return _bad_signature("X-Amz-Date is malformed.")
        now = dt.datetime.now(dt.UTC)
        if abs(now - when) > SKEW:
            return _bad_signature(f"Signature expired: {stamp} is now earlier than allowed.")
        signed = m["signed"].split(";")
        have = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()}
        if "host" not in signed or any(h not in have for h in signed):
            return _bad_signature("A signed header is missing.")
        path = bytes(scope.get("raw_path") or str(scope.get("path", "/")).encode()).decode()
        query = bytes(scope.get("query_string", b"")).decode("latin-1")
        url = f"http://{have['host']}{path}" + (f"?{query}" if query else "")
        request = AWSRequest(
            method=str(scope.get("method", "POST")),
            url=url,
            data=body,
            headers={h: have[h] for h in signed},
        )
        request.context["timestamp"] = stamp
        secret = self._secrets.get(m["akid"], b"").decode("utf-8")
        signer = SigV4Auth(Credentials(m["akid"], secret), m["service"], m["region"])
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if not hmac.compare_digest(expected.encode(), m["sig"].encode()):
            return _bad_signature(
                "The request signature we calculated does not match the signature you "
                "provided. Check your AWS Secret Access Key and signing method."
            )
        return None

    def render(self, error: ApiError) -> tuple[int, dict[str, str], bytes]:
        status, kind, message = _TYPES.get(error.kind, (400, "InvalidParameterException", None))
        body = {"__type": kind, "message": message or error.message}
        headers = {k: v for k, v in error.headers.items() if k.lower() != "retry-after"}
        headers["x-amzn-ErrorType"] = kind
        return status, headers, json.dumps(body).encode("utf-8")

    def sample_answer(self) -> bytes:
        label = {"Name": "Dog", "Confidence": 93.1, "Parents": [{"Name": "Animal"}]}
        return json.dumps({"Labels": [label], "LabelModelVersion": "3.0"}).encode("utf-8")

    def install(self, app: FastAPI, ctx: Context) -> None:
        parents = _parents(ctx.index)

        @app.post("/", summary="DetectLabels (X-Amz-Target: RekognitionService.DetectLabels)")
        def detect_labels(request: Request) -> Response:
            target = request.headers.get("x-amz-target", "")
            if target != TARGET:
                raise ApiError(400, f"Unknown operation {target!r}: only {TARGET} is served.")
            image, max_labels, min_conf = _parse(request_body(request))
            out = ctx.labeller.label(request_key(request), [image])[0]
            if out.probs is None:
                raise ApiError(400, "Request has invalid image format", kind="bad_image")
            set_billed(request, 1)
            found = ctx.index.annotate(
                out.probs[None], threshold=min_conf / 100.0, max_results=max_labels
            )[0]
            labels = [
                {
                    "Name": a.description,
                    "Confidence": round(100.0 * a.score, 4),
                    "Instances": [],
                    "Parents": [{"Name": p} for p in parents.get(a.mid, [])],
                    "Aliases": [],
                    "Categories": [],
                }
                for a in found
            ]
            return json_reply(
                {"Labels": labels, "LabelModelVersion": "3.0"},
                headers={"x-amzn-RequestId": request.headers.get("amz-sdk-invocation-id", "-")},
            )


def _bad_signature(message: str) -> ApiError:
    return ApiError(403, message, kind="bad_signature")


def _invalid(message: str) -> ApiError:
    return ApiError(400, message, kind="invalid")


def _parse(body: bytes) -> tuple[bytes, int, float]:
    """The image bytes, MaxLabels and MinConfidence of a DetectLabels body; checked whole
    before anything is billed."""
    try:
        doc: Any = json.loads(body)
    except (ValueError, RecursionError):
        raise _invalid("Could not parse the request body as JSON.") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("Image"), dict):
        raise _invalid("Image is required: {'Image': {'Bytes': base64}}.")
    image = doc["Image"]
    if "S3Object" in image and "Bytes" not in image:
        raise _invalid("Image.S3Object is not supported here: send Image.Bytes.")
    raw = image.get("Bytes")
    if not isinstance(raw, str):
        raise _invalid("Image.Bytes must be a base64 string.")
    try:
        data = decode_base64(raw)
    except ValueError:
        raise _invalid("Image.Bytes is not valid base64.") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise ApiError(
            400,
            f"Image size {len(data)} bytes exceeds the {MAX_IMAGE_BYTES} byte limit.",
            kind="image_too_large",
        )
    head = sniff(data)
    if head is None or head[0] not in FORMATS:
        raise ApiError(400, "Request has invalid image format", kind="bad_image")
    max_labels = doc.get("MaxLabels", DEFAULT_MAX_LABELS)
    min_conf = doc.get("MinConfidence", DEFAULT_MIN_CONFIDENCE)
    if isinstance(max_labels, bool) or not isinstance(max_labels, int) or max_labels < 0:
        raise _invalid("MaxLabels must be an integer >= 0.")
    if isinstance(min_conf, bool) or not isinstance(min_conf, int | float):
        raise _invalid("MinConfidence must be a number in [0, 100].")
    if not 0.0 <= float(min_conf) <= 100.0:
        raise _invalid("MinConfidence must be a number in [0, 100].")
    return data, max_labels, float(min_conf)
