"""``pachyderm projections APP``: run the app's projections on this process's partitions.

Projection processes form a membership group of their own (``"projections"``),
so they split the partitions among themselves whatever the workers do. Like a
worker, the process serves ``/healthz``, ``/readyz`` and ``/metrics``, and stops
cleanly on SIGTERM or SIGINT (a batch in flight is rolled back, exactly once, or
applied again by the next owner, at least once).

``PACHYDERM_EVENT_RELAY=true`` adds an :class:`~pachyderm.EventRelay` to an app
that registers none: the relay runs without a change to the app's code, and
never twice (an app's own relay, whatever its name, is the one that runs).
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from .._app import App
from .._errors import PachydermError
from .._loading import load_app
from .._settings import Settings
from ..projections import Cursor, LagGauges, ProjectionProcess, open_cursors
from ..projections._relay import EventRelay
from ..store import open_store
from ..telemetry import Check, database_check
from ._runtime import health_endpoints, observed, starting, stop_on_signals, worker_id
from ._serve import membership_of

log = logging.getLogger("pachyderm.projections")


def readiness(process: ProjectionProcess) -> dict[str, Check]:
    """Ready when it runs its projections on its whole assignment, and the database answers."""

    async def runners() -> str | None:
        return None if process.serving else "not running its assigned partitions"

    return {"runners": runners, "database": database_check(process.store)}


def _lag_gauges(process: ProjectionProcess) -> LagGauges:
    """The lag of the cursors this process runs (each process reports its own)."""
    names = {projection.name for projection in process.app.projections}

    def mine(cursor: Cursor) -> bool:
        return cursor.projection in names and cursor.partition in process.owned

    return LagGauges(process.store, process.cursors, mine)


def with_relay(app: App, settings: Settings) -> App:
    """``app``, or (``PACHYDERM_EVENT_RELAY=true`` and no relay registered) a copy that
    also registers an :class:`~pachyderm.EventRelay`."""
    if not settings.event_relay or any(isinstance(p, EventRelay) for p in app.projections):
        return app
    return App(
        [entity_type.entity for entity_type in app],
        app.effect_handlers,
        [
            *app.projections,
            EventRelay(amqp_url=settings.amqp_url.get_secret_value(), namespace=settings.namespace),
        ],
    )


async def projections_command(settings: Settings, _: argparse.Namespace) -> None:
    """``pachyderm projections [APP]``: the app given, else ``PACHYDERM_APP``."""
    assert settings.app is not None, "the command line checks it"
    app = with_relay(load_app(settings.app), settings)
    if not app.projections:
        raise PachydermError(
            f"the app {settings.app} has no projections to run"
            " (PACHYDERM_EVENT_RELAY=true runs the event relay for it)"
        )
    name = worker_id(settings)
    checks: dict[str, Check] = {"startup": starting}
    database_url = settings.database_url.get_secret_value()
    with observed(settings, "pachyderm-projections", name) as telemetry:
        stop = stop_on_signals()
        async with health_endpoints(checks, settings):
            store = await open_store(
                database_url, namespace=settings.namespace, shards=settings.shard_map()
            )
            cursors = await open_cursors(database_url, namespace=settings.namespace)
            membership = await membership_of(settings, name, fleet="projections")
            try:
                process = ProjectionProcess(
                    app, store, cursors, membership, partitions=settings.partitions
                )
                gauges = _lag_gauges(process)
                if telemetry.meter_provider is not None:
                    gauges.register(telemetry.meter_provider.get_meter("pachyderm.projections"))
                measuring = asyncio.create_task(gauges.run())
                checks.clear()
                checks.update(readiness(process))
                log.info(
                    "projections %s running %s in namespace %r",
                    name,
                    ", ".join(p.name for p in app.projections) or "nothing",
                    settings.namespace,
                )
                try:
                    await process.run(stop)
                finally:
                    measuring.cancel()
            finally:
                await membership.close()
                await cursors.close()
                await store.close()
        log.info("projections %s stopped", name)
