"""The free pre-flight check of a label API, whatever its wire schema."""

from __future__ import annotations

import httpx

from .errors import RemoteError, RemoteUnavailable
from .retry import RetryableError
from .wire import WireSchema

__all__ = ["probe"]


def probe(client: httpx.Client, schema: WireSchema) -> str:
    """Send the schema's unbilled call (no image) and say what came back.

    Returns a one-line description when the endpoint answers and does not refuse the key (200,
    or 400 for having no image), or says the check is skipped where the API has no free call.
    Raises RemoteAuthError for a refused key, QuotaExhausted for a spent one,
    RemoteUnavailable when nothing answers (or a 5xx, or a rate limit), and RemoteError for
    anything else (a 404: not that API's endpoint)."""
    where, hint = schema.where(), schema.key_hint()
    call = schema.probe_call()
    if call is None:
        return f"{where}: no free call to check it with; skipped (the first query checks it)"
    try:
        r = client.request(call.method, call.url, headers=call.headers, content=call.content)
    except httpx.HTTPError as e:
        raise RemoteUnavailable(f"{where} does not answer: {type(e).__name__}: {e}") from None
    if r.status_code == 200:
        return f"{where} answers (HTTP 200) and takes the key {hint}"
    why = schema.failure(r)
    if r.status_code == 400 and type(why) is RemoteError:
        return f"{where} answers (HTTP 400 for no image) and takes the key {hint}"
    if isinstance(why, RetryableError):
        raise RemoteUnavailable(f"{where} is not answering now: {why}")
    raise why
