"""The HTTP server around the label service: uvicorn with timeouts that no client can wait
out, bound to a socket made here (so a bad host or port is one line, before the model loads).

* **Headers:** a connection must deliver a request's headers within ``header_timeout_s`` of
  its first byte (or of connecting): a client that connects and says nothing, or trickles a
  header a byte at a time, is closed. uvicorn itself only times out idle keep-alive
  connections.
* **Keep-alive:** an idle connection is closed after ``keep_alive_s``.
* **Bodies** are timed by the gateway (``body_timeout_s`` of :func:`create_app`): 408.
* **Connections:** at most ``max_connections`` at once; more are answered 503.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import UserInputError

__all__ = [
    "HEADER_TIMEOUT_S",
    "KEEP_ALIVE_S",
    "MAX_CONNECTIONS",
    "GuardedH11",
    "bind",
    "server_config",
]

HEADER_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5
MAX_CONNECTIONS = 512


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's headers (see the module)."""

    header_timeout_s: float = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._waiting_for_headers():
            if self._header_timer is None:  # the first byte's deadline: trickling never extends it
                self._arm()
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _waiting_for_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        # An idle keep-alive connection is uvicorn's to close; only a request begun and not
        # finished, or a connection that never sent one, is ours.
        if self._waiting_for_headers() and not self.transport.is_closing():
            self.transport.close()


def _protocol(header_timeout_s: float) -> type[GuardedH11]:
    return type("GuardedH11Configured", (GuardedH11,), {"header_timeout_s": header_timeout_s})


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; UserInputError (one line) if it cannot be had."""
    if not 0 <= port <= 65535:
        raise UserInputError(f"--port must be in [0, 65535], got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as e:
        raise UserInputError(f"cannot listen on {host}:{port}: unknown host ({e})") from None
    family, kind, proto, _, addr = infos[0]
    # An explicit IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say TCP, and
    # without it every response waits out a 40 ms delayed ACK.
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise UserInputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def server_config(
    app: Any,
    *,
    log_level: str = "warning",
    header_timeout_s: float = HEADER_TIMEOUT_S,
    keep_alive_s: int = KEEP_ALIVE_S,
    max_connections: int = MAX_CONNECTIONS,
) -> Any:
    """The uvicorn Config the service runs under (uvicorn's own access log is off: it would
    print the query string, API key included)."""
    import uvicorn

    return uvicorn.Config(
        app,
        http=_protocol(header_timeout_s),
        log_level=log_level,
        lifespan="off",
        access_log=False,
        timeout_keep_alive=keep_alive_s,
        limit_concurrency=max_connections,
    )
