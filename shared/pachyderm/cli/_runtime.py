"""Building a process's parts from settings, and running it until a signal."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager

from .._client import topology_of
from .._errors import PachydermError
from .._settings import Settings
from .._stack_dumps import dump_on_signal
from ..telemetry import Check, HealthServer, Telemetry, install_telemetry, setup_telemetry
from ..telemetry._logging import logging_configured
from ..transport import RabbitMQTransport

log = logging.getLogger("pachyderm")


def worker_id(settings: Settings) -> str:
    """The configured id, else one naming this host and process, made unique."""
    return settings.worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@contextmanager
def observed(settings: Settings, service: str, instance: str) -> Iterator[Telemetry]:
    """Logs in the configured format, and telemetry, until the block ends: then the
    telemetry is flushed and uninstalled, and logging is as it was."""
    with logging_configured(settings):
        telemetry = setup_telemetry(settings, service, instance=instance)
        try:
            yield telemetry
        finally:
            telemetry.shutdown()
            install_telemetry(Telemetry())


async def starting() -> str:
    """The readiness check of a process still starting."""
    return "starting"


@asynccontextmanager
async def health_endpoints(checks: Mapping[str, Check], settings: Settings) -> AsyncIterator[None]:
    """``/healthz``, ``/readyz`` (``checks``, read on every request) and ``/metrics`` on
    the health host and port while in the block, the port written to the health port
    file if one is set.

    A port already taken stops the process (:class:`PachydermError`), as a taken
    gateway port does: a process without its probes would be restarted by
    Kubernetes for reasons nobody could read, and a second process on a laptop
    would go unwatched. Several processes on one host each need their own port,
    or ``PACHYDERM_HEALTH_PORT=0`` and a port file each.
    """
    host, port = settings.health_host, settings.health_port
    server = HealthServer(checks, host=host, port=port)
    try:
        await server.start()
    except OSError as error:
        # The bare reason: socket.create_server's strerror repeats the address.
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise PachydermError(
            f"cannot serve the health endpoints on {host}:{port}: {reason};"
            " give each process of this host its own PACHYDERM_HEALTH_PORT, or 0 for any"
            " free port (PACHYDERM_HEALTH_PORT_FILE tells which)"
        ) from error
    log.info("health and metrics on %s:%d: /healthz, /readyz, /metrics", host, server.port)
    if settings.health_port_file is not None:
        # Written whole under another name, then renamed: a reader never sees half a number.
        partial = settings.health_port_file.with_name(settings.health_port_file.name + ".tmp")
        partial.write_text(f"{server.port}\n")
        partial.replace(settings.health_port_file)
    try:
        yield
    finally:
        await server.stop()


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: the process then shuts down cleanly. (And
    SIGUSR2 dumps the process's stacks, :mod:`pachyderm._stack_dumps`.)"""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    dump_on_signal()
    return stop


@asynccontextmanager
async def broker(settings: Settings, name: str) -> AsyncIterator[RabbitMQTransport]:
    """A started RabbitMQ transport for the settings' namespace, closed on exit."""
    topology = topology_of(settings)
    transport = RabbitMQTransport(
        settings.amqp_url.get_secret_value(), topology, connection_name=name
    )
    await transport.start()
    try:
        yield transport
    finally:
        await transport.close()
