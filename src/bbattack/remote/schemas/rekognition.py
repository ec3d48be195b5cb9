"""AWS Rekognition ``DetectLabels`` (JSON 1.1 protocol): one image a call, signed with SigV4
(botocore's signer; ``api_key`` is ``AKID:SECRET`` or ``AKID:SECRET:SESSION_TOKEN``),
Confidence 0-100 read as 0-1, and every ancestor of a label in its ``Parents``."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from typing import Any

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from ...errors import UserInputError
from ..errors import QuotaExhausted, RemoteAuthError, RemoteError
from ..retry import GarbledError, RetryableError, retry_after
from ..wire import (
    MAX_QUOTED,
    Call,
    Label,
    WireSchema,
    json_body,
    refusal,
    sort_best_first,
    text_of,
    unit_score,
)

__all__ = ["DEFAULT_REGION", "TARGET", "Rekognition", "region_of"]

TARGET = "RekognitionService.DetectLabels"
DEFAULT_REGION = "us-east-1"
# The API's documented default, sent explicitly: what a user of the API sees. (0 reveals more
# labels for the same price, but then nearly every label is "in the top-k".)
MIN_CONFIDENCE = 55.0
_HOST = re.compile(r"^rekognition(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
# Error types (the part after '#' of __type) and what they mean to bbattack.
_RETRY = frozenset(
    {
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "InternalServerError",
        "ServiceUnavailableException",
    }
)
_AUTH = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignature",
        "IncompleteSignatureException",
        "MissingAuthenticationTokenException",
        "MissingAuthenticationToken",
        "InvalidClientTokenId",
        "ExpiredTokenException",
        "SignatureDoesNotMatch",
    }
)
_QUOTA = frozenset({"ServiceQuotaExceededException"})


def region_of(url: httpx.URL) -> str:
    """The region in an AWS endpoint's host (``rekognition.eu-west-1.amazonaws.com``), or
    ``us-east-1`` for any other host (a local stand-in)."""
    m = _HOST.match(url.host)
    return m.group(1) if m else DEFAULT_REGION


def _credentials(api_key: str) -> Credentials:
    parts = api_key.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise UserInputError(
            "Rekognition needs --api-key ACCESS_KEY_ID:SECRET_ACCESS_KEY (or "
            "ACCESS_KEY_ID:SECRET_ACCESS_KEY:SESSION_TOKEN)"
        )
    return Credentials(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def error_type(r: httpx.Response) -> tuple[str, str]:
    """The error's short type (``ThrottlingException``) and message of a JSON 1.1 error."""
    kind, message = "", ""
    try:
        body = json.loads(r.content)
    except ValueError:
        body = None
    if isinstance(body, dict):
        kind = str(body.get("__type", ""))
        message = str(body.get("message", body.get("Message", "")))
    kind = kind or r.headers.get("x-amzn-errortype", "")
    # "com.amazonaws.rekognition#ThrottlingException", or "Name:http://..." in the header.
    kind = kind.rsplit("#", 1)[-1].split(":", 1)[0].strip()
    return kind, (message or text_of(r))[:MAX_QUOTED]


class Rekognition(WireSchema):
    """``POST /`` with ``X-Amz-Target: RekognitionService.DetectLabels``; the region comes
    from the endpoint's host (``us-east-1`` otherwise)."""

    name = "rekognition"
    title = "Rekognition"
    max_images_per_call = 1
    auth = "SigV4 (--api-key AKID:SECRET)"
    hierarchy = "parents"
    scale = "0-100"

    def __init__(
        self,
        endpoint: str,
        api_key: str,
        max_results: int,
        *,
        min_confidence: float = MIN_CONFIDENCE,
    ) -> None:
        super().__init__(endpoint, api_key, max_results)
        self._credentials = _credentials(api_key)
        self.region = region_of(httpx.URL(self.endpoint))
        if not 0.0 <= min_confidence <= 100.0:
            raise UserInputError(f"min_confidence must be in [0, 100], got {min_confidence}")
        self.min_confidence = float(min_confidence)

    @property
    def tag(self) -> str:
        # The default keeps the plain name: other values ask for other answers.
        m = self.min_confidence
        return self.name if m == MIN_CONFIDENCE else f"{self.name}:min_confidence={m:g}"

    def resolve(self, url: httpx.URL) -> str:
        return str(url.copy_with(path="/")) if url.path in ("", "/") else str(url)

    def key_hint(self) -> str:
        akid = self._key.split(":", 1)[0]
        return akid[: min(4, len(akid) // 2)] + "…"

    def _signed(self, body: dict[str, Any]) -> Call:
        content = json.dumps(body).encode("utf-8")
        request = AWSRequest(
            method="POST",
            url=self.endpoint,
            data=content,
            headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET},
        )
        # Adds X-Amz-Date, the session token if any, and Authorization over host and these.
        SigV4Auth(self._credentials, "rekognition", self.region).add_auth(request)
        return Call(self.endpoint, {k: str(v) for k, v in request.headers.items()}, content)

    def request(self, images: Sequence[bytes]) -> Call:
        (png,) = images
        return self._signed(
            {
                "Image": {"Bytes": base64.b64encode(png).decode("ascii")},
                "MaxLabels": self.max_results,
                "MinConfidence": self.min_confidence,
            }
        )

    def split(self, response: httpx.Response, n: int) -> list[Any]:
        data = json_body(response)
        if n != 1 or not isinstance(data, dict):
            raise GarbledError("the body is not a DetectLabels answer")
        self.decode(data)
        return [data]

    def decode(self, entry: Any) -> list[Label]:
        labels = entry.get("Labels", []) if isinstance(entry, dict) else None
        if not isinstance(labels, list):
            raise GarbledError("Labels is not a list")
        out: list[Label] = []
        for a in labels:
            name = a.get("Name") if isinstance(a, dict) else None
            if not isinstance(name, str):
                raise GarbledError("a label lacks its Name")
            parents = a.get("Parents", []) or []
            if not isinstance(parents, list):
                raise GarbledError("Parents is not a list")
            names = tuple(p["Name"] for p in parents if isinstance(p, dict) and "Name" in p)
            if len(names) != len(parents) or not all(isinstance(p, str) for p in names):
                raise GarbledError("a parent lacks its Name")
            out.append(Label(name, unit_score(a.get("Confidence"), 100.0), names))
        return sort_best_first(out, self.max_results)

    def failure(self, response: httpx.Response) -> Exception:
        """Throttling (and 5xx) retried; a refused signature or key is the user's to fix;
        ImageTooLarge, InvalidImageFormat, InvalidParameter and the like are refused."""
        r = response
        kind, message = error_type(r)
        what = f"HTTP {r.status_code} from {self.where()}: {kind or 'error'}: {message}"
        if (refused := refusal(kind, what)) is not None:  # QueryRejected/KeyBannedException
            return refused
        if kind in _RETRY or r.status_code == 429 or r.status_code >= 500:
            return RetryableError(what, retry_after(r))
        if kind in _QUOTA:
            return QuotaExhausted(f"{what} (the account's quota is spent)")
        if kind in _AUTH or r.status_code in (401, 403):
            return RemoteAuthError(f"{what} (check the access key {self.key_hint()})")
        if kind == "ImageTooLargeException":
            return RemoteError(f"{what} (Rekognition takes images up to 5 MB)")
        return RemoteError(what)

    def probe_call(self) -> Call:
        # No image: the signature is checked first, then the request is refused (400),
        # and nothing is billed.
        return self._signed({})
