"""Run the service in a background thread on a free loopback port (demos, tests, benchmarks)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["serve_in_thread"]


@contextmanager
def serve_in_thread(
    app: Any, host: str = "127.0.0.1", timeout_s: float = 20.0, **server_options: Any
) -> Iterator[str]:
    """Serve an ASGI ``app`` with uvicorn in a daemon thread; yield its base URL; stop it.
    ``server_options`` go to :func:`bbattack.service.server.server_config` (timeouts)."""
    import uvicorn

    from .server import bind, server_config

    sock = bind(host, 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(server_config(app, **server_options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the label service did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout_s)
        sock.close()
