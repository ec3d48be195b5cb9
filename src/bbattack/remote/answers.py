"""What a label API's answer means: the error a non-200 answer stands for, and a free check
that the endpoint answers and takes the key."""

from __future__ import annotations

import json

import httpx

from .errors import QuotaExhausted, RemoteAuthError, RemoteError, RemoteUnavailable
from .retry import RetryableError, is_retryable_status, retry_after
from .schema import error_of

__all__ = ["failure", "probe"]


def failure(r: httpx.Response, endpoint: str, key_hint: str) -> Exception:
    """The exception a non-200 answer stands for: RetryableError (429 rate limit, 5xx),
    QuotaExhausted (429 QUOTA_EXCEEDED), RemoteAuthError (401, 403, an API_KEY_* reason) or
    RemoteError (any other 4xx, with the server's message)."""
    message, reason = error_of(r)
    what = f"HTTP {r.status_code} from {endpoint}: {message}"
    if is_retryable_status(r.status_code, reason):
        return RetryableError(what, retry_after(r))
    if r.status_code == 429:
        return QuotaExhausted(f"{what} (the key's quota is spent)")
    if r.status_code in (401, 403) or (reason or "").startswith("API_KEY"):
        return RemoteAuthError(f"{what} (check the API key {key_hint})")
    if r.status_code == 413:
        return RemoteError(f"{what} (try a smaller images_per_call)")
    return RemoteError(what)


def probe(client: httpx.Client, endpoint: str, key_hint: str) -> str:
    """Send one call with no image (nothing to bill) and say what came back.

    Returns a one-line description when the endpoint answers and does not refuse the key (it
    answers the empty call with 200, or with 400 for having no image). Raises RemoteAuthError
    for a refused key, RemoteUnavailable when nothing answers (or a 5xx, or a rate limit), and
    RemoteError for anything else (a 404: not an images:annotate endpoint)."""
    try:
        r = client.post(
            endpoint,
            content=json.dumps({"requests": []}).encode(),
            headers={"Content-Type": "application/json"},
        )
    except httpx.HTTPError as e:
        raise RemoteUnavailable(f"{endpoint} does not answer: {type(e).__name__}: {e}") from None
    if r.status_code in (200, 400):
        _, reason = error_of(r) if r.status_code == 400 else ("", None)
        if not (reason or "").startswith("API_KEY"):
            return f"{endpoint} answers (HTTP {r.status_code}) and takes the key {key_hint}"
    why = failure(r, endpoint, key_hint)
    if isinstance(why, RetryableError):
        raise RemoteUnavailable(f"{endpoint} is not answering now: {why}")
    raise why
