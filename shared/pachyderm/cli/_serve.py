"""``pachyderm worker APP``: serve partitions from RabbitMQ against PostgreSQL.

:func:`serve` hands the worker its store and transport through two wrappers,
the identity unless told otherwise: the one seam through which a harness
(the chaos suite's faults) reaches the worker's ports without patching it.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import TypeVar

from .._expiry import CommandWindow
from .._garbage_collection import tune_collector
from .._loading import load_app
from .._repartition import refuse_a_lower_count
from .._settings import Settings
from ..fleet import Membership, PostgresMembership, SoloMembership
from ..store import EventStore, open_store
from ..telemetry import Check, broker_check, database_check
from ..transport import Transport
from ..worker import PruneOptions, QuarantineOptions, Worker, WorkerOptions
from ..worker._quarantine import DEFAULT_ISOLATION
from ._runtime import broker, health_endpoints, observed, starting, stop_on_signals, worker_id

log = logging.getLogger("pachyderm.worker")

Port = TypeVar("Port")


def as_is(port: Port) -> Port:
    """The default wrapper: the port itself."""
    return port


def worker_options(settings: Settings) -> WorkerOptions:
    return WorkerOptions(
        prefetch=settings.prefetch,
        max_batch=settings.max_batch,
        max_in_flight=settings.max_in_flight,
        snapshot_every=settings.snapshot_every,
        cache_capacity=settings.cache_capacity,
        idle_timeout=settings.idle_timeout,
        effects_grace=settings.effects_grace,
        broker_patience=settings.broker_patience,
        stop_limit=settings.stop_limit or None,
        window=CommandWindow(settings.command_retention, settings.command_expiry_margin),
        pruning=prune_options(settings),
        quarantine=QuarantineOptions(
            settings.max_attempts,
            settings.quarantine_policy,
            isolation=settings.handler_budget or DEFAULT_ISOLATION,
        ),
        handler_budget=settings.handler_budget or None,
    )


def prune_options(settings: Settings) -> PruneOptions:
    """What the settings say is kept how long, and how pruning paces itself."""
    return PruneOptions(
        commands=settings.command_retention,
        effects=settings.outbox_retention,
        batch=settings.prune_batch,
        pause=settings.prune_pause,
        interval=settings.prune_interval,
    )


async def membership_of(settings: Settings, name: str, *, fleet: str = "worker") -> Membership:
    """The membership of process ``name`` in ``fleet`` (its group), as the settings say."""
    if settings.ownership == "all":
        return SoloMembership(name)
    return await PostgresMembership.connect(
        settings.database_url.get_secret_value(),
        schema=settings.namespace,
        worker_id=name,
        heartbeat_interval=settings.heartbeat_interval,
        dead_after=settings.dead_after,
        # The deployment's size is its workers'; projection processes join when they may.
        fleet_size=settings.fleet_size if fleet == "worker" else None,
        fleet=fleet,
        pause_tolerance=pause_tolerance(settings),
    )


def pause_tolerance(settings: Settings) -> float:
    """How long a blocked loop keeps its lease: never past the handler budget, when the
    watchdog interrupts the handler (or ends the worker, giving the lease up)."""
    budget = settings.handler_budget
    return min(settings.pause_tolerance, budget) if budget else settings.pause_tolerance


def readiness(worker: Worker) -> dict[str, Check]:
    """A worker is ready when it consumes its whole assignment, and its database and
    broker answer."""

    async def consumers() -> str | None:
        return None if worker.serving else "not consuming its assigned partitions"

    return {
        "consumers": consumers,
        "database": database_check(worker.store),
        "broker": broker_check(worker.transport),
    }


async def worker_command(settings: Settings, _: argparse.Namespace) -> None:
    """``pachyderm worker [APP]``: the app given, else ``PACHYDERM_APP``."""
    assert settings.app is not None, "the command line checks it"
    await serve(settings, settings.app)


async def serve(
    settings: Settings,
    app_spec: str,
    *,
    wrap_store: Callable[[EventStore], EventStore] = as_is,
    wrap_transport: Callable[[Transport], Transport] = as_is,
) -> None:
    """Serve until SIGTERM or SIGINT; the worker, its readiness checks included, sees
    the store and the transport as ``wrap_store`` and ``wrap_transport`` return them."""
    app = load_app(app_spec)
    tune_collector(settings.gc_threshold)
    name = worker_id(settings)
    # Read on every request: "starting" until the worker exists.
    checks: dict[str, Check] = {"startup": starting}
    with observed(settings, "pachyderm-worker", name):
        stop = stop_on_signals()
        async with health_endpoints(checks, settings):
            database_url = settings.database_url.get_secret_value()
            store = wrap_store(
                await open_store(
                    database_url,
                    namespace=settings.namespace,
                    shards=settings.shard_map(),
                    statement_timeout=settings.statement_timeout,
                )
            )
            membership = await membership_of(settings, name)
            try:
                async with broker(settings, name) as connected:
                    # Before joining: on an outgrown count it would take others' queues.
                    await refuse_a_lower_count(
                        settings.amqp_url.get_secret_value(), connected.topology
                    )
                    transport = wrap_transport(connected)
                    worker = Worker(app, store, transport, membership, worker_options(settings))
                    checks.clear()
                    checks.update(readiness(worker))
                    log.info("worker %s serving namespace %r", name, settings.namespace)
                    await worker.run(stop)
            finally:
                await membership.close()
                await store.close()
        log.info("worker %s stopped", name)
