"""Serving an ASGI app with uvicorn inside the caller's event loop, until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port``; port 0 picks a free one.

    Bound before serving, so a port in use fails at once with a clear
    ``OSError``, and the bound port is known (``getsockname()[1]``).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


def url_of(listener: socket.socket) -> str:
    """The ``http://`` base URL of a listening socket."""
    host, port = listener.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals alone: its caller decides when it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(
    app: ASGIApp,
    listener: socket.socket,
    stop: asyncio.Event,
    *,
    grace: float,
    access_log: bool = True,
) -> None:
    """Serve ``app`` on ``listener`` until ``stop`` is set, then stop accepting and give the
    requests in flight up to ``grace`` seconds to finish. Closes ``listener``."""
    config = uvicorn.Config(
        app,
        lifespan="off",
        ws="none",
        log_config=None,  # the process's logging, as configured by the CLI or the host
        server_header=False,
        access_log=access_log,
        timeout_graceful_shutdown=math.ceil(grace),
    )
    server = _Server(config)

    async def exit_on_stop() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.create_task(exit_on_stop())
    try:
        await server.serve(sockets=[listener])
    finally:
        watcher.cancel()
        listener.close()
