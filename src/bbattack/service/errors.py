"""Google's error envelope for the label service, and the mapping of request validation
errors onto Google's wording."""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..errors import KeyBanned, QueryRejected

__all__ = ["KINDS", "SERVICE", "ApiError", "redact", "refusal", "validation_error"]

SERVICE = "vision.googleapis.com"

# What went wrong, in no API's words: each wire schema renders a kind as its own error body
# (Google's envelope, Rekognition's ``__type``, Clarifai's status code, ...).
KINDS = (
    "missing_key",
    "bad_key",
    "bad_signature",
    "rate",
    "quota",
    "too_large",
    "image_too_large",
    "bad_image",
    "too_many_images",
    "invalid",
    "not_found",
    "method",
    "timeout",
    "internal",
    "unavailable",
    "rejected",
    "banned",
)
_KIND_OF_CODE = {
    401: "bad_key",
    403: "missing_key",
    404: "not_found",
    405: "method",
    408: "timeout",
    413: "too_large",
    429: "rate",
    503: "unavailable",
}

# google.rpc.Code names of the HTTP statuses this service sends.
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    408: "DEADLINE_EXCEEDED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class ApiError(Exception):
    """An error answered with Google's envelope ``{"error": {code, message, status}}`` under
    the ``gcv`` schema; ``kind`` (one of :data:`KINDS`) is what other schemas render."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        headers: dict[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
        kind: str | None = None,
        status: str | None = None,
        billed: int = 0,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status  # google.rpc.Code name, where the HTTP status does not say it
        self.billed = billed  # images billed all the same (a defence's refusal), for the log
        if kind is None:
            kind = _KIND_OF_CODE.get(code, "internal" if code >= 500 else "invalid")
        self.kind = kind
        self.message = message
        self.headers = headers or {}
        self.details = list(details or [])
        if reason:
            self.details.insert(
                0,
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": reason,
                    "domain": "googleapis.com",
                    "metadata": {"service": SERVICE},
                },
            )

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "status": self.status
            or _STATUS.get(self.code, "UNKNOWN" if self.code >= 500 else "FAILED_PRECONDITION"),
        }
        if self.details:
            err["details"] = self.details
        return {"error": err}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.code, headers=self.headers)


def refusal(error: QueryRejected, billed: int) -> ApiError:
    """A defence's refusal of a call (``billed`` images, billed all the same: the caller paid
    for the call) as the error every schema renders in its own form: kind ``rejected`` (a 4xx
    that says not to retry it) or ``banned`` (403: the key is refused from now on). Never 429:
    clients retry that, and a refusal must not be retried."""
    by = f" ({error.defense})" if error.defense else ""
    if isinstance(error, KeyBanned):
        message = (
            f"This API key is banned: its queries were flagged by the service's abuse "
            f"detection{by}. Every request from it is refused."
        )
        return ApiError(403, message, reason="KEY_BANNED", kind="banned", billed=billed)
    message = (
        f"Request rejected: the service's abuse detection{by} flagged it as part of a "
        "query attack. Do not retry it unchanged."
    )
    return ApiError(
        400,
        message,
        reason="QUERY_REJECTED",
        kind="rejected",
        status="FAILED_PRECONDITION",
        billed=billed,
    )


def redact(key: str | None) -> str:
    """A key as the access log shows it: at most its first 4 characters (half of a short one)."""
    if not key:
        return "-"
    return key[: min(4, len(key) // 2)] + "…"


def _field_path(loc: tuple[Any, ...]) -> str:
    """("body", "requests", 0, "image") -> "requests[0].image"."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_error(exc: RequestValidationError) -> ApiError:
    """Google-like wording for the first problem; every problem (up to 10) in the details."""
    violations: list[dict[str, str]] = []
    messages: list[str] = []
    for e in list(exc.errors())[:10]:
        loc = tuple(e.get("loc", ()))
        kind = str(e.get("type", ""))
        path = _field_path(loc)
        if kind == "json_invalid":
            reason = str(e.get("ctx", {}).get("error", "JSON decode error"))
            pos = loc[1] if len(loc) > 1 else "?"
            msg = f"Invalid JSON payload received. {reason} at position {pos}."
        elif kind == "extra_forbidden":
            parent, _, name = path.rpartition(".")
            where = f" at '{parent}'" if parent else ""
            msg = f'Invalid JSON payload received. Unknown name "{name}"{where}: Cannot find field.'
        elif kind == "missing":
            msg = f"Invalid JSON payload received. Missing required field '{path or 'body'}'."
        elif not path:
            msg = (
                "Invalid JSON payload received. Send a JSON object with "
                "Content-Type: application/json."
            )
        else:
            msg = f"Invalid value at '{path}': {e.get('msg', 'invalid')}"
        messages.append(msg)
        violations.append({"field": path, "description": msg})
    details = [
        {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": violations}
    ]
    more = len(exc.errors()) - 1
    first = messages[0] if messages else "Invalid request."
    return ApiError(400, first + (f" (and {more} more)" if more > 0 else ""), details=details)
