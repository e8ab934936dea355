"""Building a process's parts from settings, and running it until a signal."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .._settings import Settings
from ..transport import RabbitMQTransport, Topology


def worker_id(settings: Settings) -> str:
    """The configured id, else one naming this host and process, made unique."""
    return settings.worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: the process then shuts down cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


@asynccontextmanager
async def broker(settings: Settings, name: str) -> AsyncIterator[RabbitMQTransport]:
    """A started RabbitMQ transport for the settings' namespace, closed on exit."""
    topology = Topology(settings.namespace, settings.partitions)
    transport = RabbitMQTransport(
        settings.amqp_url.get_secret_value(), topology, connection_name=name
    )
    await transport.start()
    try:
        yield transport
    finally:
        await transport.close()
