"""The whole fleet in one process: SQLite, the in-process transport, one worker.

The same worker, engine and client code as production, for first steps,
``pachyderm dev`` and fast tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ._app import App
from ._client import Client
from ._dispatcher import EffectDispatcher
from .fleet import SoloMembership
from .store import EventStore, open_store
from .transport import InProcessTransport, Topology
from .worker import Worker, WorkerOptions


async def _until_ready(worker: Worker, running: asyncio.Task[None]) -> None:
    """Wait for the worker to serve its partitions, or for it to fail trying."""
    ready = asyncio.create_task(worker.ready.wait())
    await asyncio.wait({ready, running}, return_when=asyncio.FIRST_COMPLETED)
    if running.done():
        ready.cancel()
        running.result()  # raises what stopped the worker
        raise RuntimeError("the worker stopped before it was ready")


class EmbeddedFleet:
    """A running embedded fleet; use :func:`embedded` to start one."""

    def __init__(self, app: App, store: EventStore, transport: InProcessTransport) -> None:
        self.app = app
        self.store = store
        self.transport = transport
        self.client = Client(app, transport)


@contextlib.asynccontextmanager
async def embedded(
    app: App,
    database_url: str = "sqlite:///:memory:",
    *,
    partitions: int = 4,
    effects_config: Mapping[str, Any] | None = None,
    options: WorkerOptions | None = None,
) -> AsyncIterator[EmbeddedFleet]:
    """Start store, worker, effect dispatcher and client; stop them all on exit."""
    store = await open_store(database_url)
    transport = InProcessTransport(Topology(partitions=partitions))
    stop = asyncio.Event()
    try:
        await store.migrate()
        worker = Worker(app, store, transport, SoloMembership("embedded"), options)
        running = asyncio.create_task(worker.run(stop))
        await _until_ready(worker, running)
        fleet = EmbeddedFleet(app, store, transport)
        dispatcher = EffectDispatcher(transport, app.effect_handlers, effects_config)
        await dispatcher.start()
        await fleet.client.start()
        try:
            yield fleet
        finally:
            stop.set()
            await dispatcher.stop()
            await running
    finally:
        await transport.close()
        await store.close()
