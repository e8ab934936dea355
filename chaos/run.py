"""One chaos run: a namespace of its own, chaos workers, callers writing the record, the
effects sink; faults injected while the load runs; then the checker's verdict.

Shared by the chaos test suite (a fault or two at a time, small) and by
``python -m chaos`` (tens of thousands of commands, dozens of faults).

A run may start with no dispatcher (``Options.sink_after``): then no queue is
bound for any effect to a handler until the sink binds one, after the first
faults. Meanwhile those effects must wait for it without holding anything
else up: before the sink binds, every Send committed so far must have been
applied by its target (checked then, the load paused so that the check has an
end); after it, every effect must reach the sink, as in any run.

Beside the workers runs a projection process (``pachyderm projections``, of
``chaos.app``'s ``EventCounts``), from the start to the end of the run (a
``projections_killed`` fault replaces it): before the final check the run waits
until it applied the whole log, and the checker compares its read model with
the stored histories.

With poison commands in the load (``Options.poison_share``), a supervisor
replaces every worker that goes and an operator skips each quarantined command
soon after (see :mod:`chaos.poison`); before the final check the run waits
until every poison is quarantined and skipped and no command is left parked.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from pachyderm import CallTimeoutError, Client, PachydermError, Ref
from pachyderm.store import PostgresEventStore
from pachyderm.testing import process_fleet

from .app import APP, PROJECTED_TABLE, PROJECTION
from .checker import (
    Observed,
    Stored,
    Violations,
    check,
    is_send,
    poisons,
    projection_behind,
    read_database,
    target,
    unapplied_sends,
)
from .faults import Fault, FaultMissedError, Target, inject
from .fleet import ChaosFleet
from .load import ClientCaller, Command, Load, Patience, RawCaller, Sender, Workload
from .poison import Operator, Supervisor
from .rabbitmq_cluster import RabbitMQCluster
from .record import Record
from .services import PrivateServices, ServiceUnavailableError
from .sink import EffectSink

ROOT = Path(__file__).resolve().parents[1]
APP_SPEC = "chaos.app:APP"
# What a run that did not settle lists of the private broker's consumers and channels
# (the channels that hold unacknowledged deliveries or consumers: their last two columns).
_CONSUMER_COLUMNS = ("queue_name", "channel_pid", "consumer_tag", "prefetch_count", "active")
_CHANNEL_COLUMNS = ("pid", "name", "prefetch_count", "messages_unacknowledged", "consumer_count")


@dataclass(frozen=True, slots=True)
class Services:
    """Where a run's fleet lives; restarts are possible only for private services."""

    dsn: str
    amqp_url: str
    private: PrivateServices | None = None
    cluster: RabbitMQCluster | None = None  # amqp_url lists its nodes


@dataclass(slots=True)
class Verdict:
    """The checker's verdict on a finished run, and what it was given."""

    violations: Violations
    stored: Stored
    observed: Observed
    unanswered: int
    settled: bool
    effects_routed_again: int  # taken from the unrouted-effects queue by the sink's passes
    sink_queue: dict[str, int] | None = None  # its ready messages and consumers at the end
    # The namespace's queues as a private broker lists them, when the run did not settle:
    # a confirmed command never stored may yet be in one (stuck, not lost).
    queues: str = ""


@dataclass(slots=True)
class Options:
    """The shape of a run."""

    seed: int = 1
    workers: int = 2
    partitions: int = 8
    probes: int = 24
    limit: int = 200  # commands in flight
    rate: float | None = None  # commands per second, at most
    patience: Patience = field(default_factory=Patience)
    hold: float = 3.0  # how long a stall, an overlap or an outage lasts
    recovery_limit: float = 300.0  # probes give up after this long: the fleet never recovered
    mix: tuple[float, float, float] = (0.6, 0.3, 0.1)  # client, raw with reply, raw without
    timer_share: float = 0.1  # of the load: reminders setting (and cancelling) timers
    ticket_share: float = 0.03  # of the load: tickets punched, ended, then refused
    # None: the effects sink binds its queue before the load. n: only after the first n
    # faults (when the load ends at the latest): until then, no queue is bound for any
    # effect to a handler, as when a handler reaches the workers before any dispatcher.
    sink_after: int | None = None
    # Of the load: poison commands (chaos.app's Volatile), each quarantined after
    # max_attempts deliveries (each taking its worker down; a hung handler's after
    # handler_budget seconds) and skipped by the run's operator skip_after seconds later.
    poison_share: float = 0.0
    max_attempts: int = 3
    handler_budget: float = 6.0  # above `hold`: a stalled (SIGSTOP) worker is not ended
    skip_after: float = 1.0
    # With poisons: a healthy request answered later than this after its first send
    # (or never) is a stall, a quarantine violation.
    stall_bound: float = 60.0

    @property
    def poisoned(self) -> bool:
        return self.poison_share > 0

    def worker_settings(self) -> dict[str, str]:
        """The workers' settings this run adds to the chaos fleet's."""
        if not self.poisoned:
            return {}
        return {"max_attempts": str(self.max_attempts), "handler_budget": str(self.handler_budget)}


class ChaosRun:
    """The parts of a running chaos run; see :func:`chaos_run`."""

    def __init__(
        self,
        *,
        fleet: ChaosFleet,
        services: Services,
        client: Client,
        raw: RawCaller,
        sink: EffectSink,
        record: Record,
        options: Options,
        operator: Operator | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.operator = operator
        self.supervisor = supervisor
        self.fleet = fleet
        self.services = services
        self.client = client
        self.sink = sink
        self.record = record
        self.options = options
        self.workload = Workload(
            options.seed,
            timer_share=options.timer_share,
            ticket_share=options.ticket_share,
            poison_share=options.poison_share,
        )
        self.caller = ClientCaller(client, APP, record, options.patience)
        self.raw = raw
        client_mix, raw_mix, noreply_mix = options.mix
        workload = self.workload
        self.load = Load(
            workload.rng,
            [
                Sender(self.caller.send, client_mix, workload.next),
                Sender(raw.send, raw_mix, workload.next),
                # Without a reply, a refusal goes unseen: send only what always applies.
                Sender(
                    functools.partial(raw.send, caller="raw-noreply"),
                    noreply_mix,
                    workload.increment,
                ),
            ],
            limit=options.limit,
            rate=options.rate,
        )
        private = services.private
        self.target = Target(
            fleet,
            self.probe,
            random.Random(options.seed),
            postgres=private.postgres if private else None,
            rabbitmq=private.rabbitmq if private else None,
            cluster=services.cluster,
            hold=options.hold,
        )
        self.faults: list[Fault] = []
        self.missed: list[str] = []
        self.early = Violations()  # found before the sink bound
        self.effects_waited = 0  # effects to handlers committed before the sink bound

    async def setup(self) -> None:
        """Open and fund the accounts (recorded like everything else)."""
        await asyncio.gather(*(self.caller.send(c, "setup") for c in self.workload.setup()))

    async def probe(self) -> None:
        """Return once every probe counter has answered a fresh command."""
        patience = Patience(attempt=1.0, give_up=self.options.recovery_limit)
        prober = ClientCaller(self.client, APP, self.record, patience)
        await asyncio.gather(
            *(
                prober.send(Command(ref, "Increment", {"amount": 1}), "probe")
                for ref in self.workload.probes(self.options.probes)
            )
        )

    async def inject(self, kind: str) -> Fault | None:
        """Inject a fault, wait for the fleet to recover, restore it; None if it missed."""
        fault: Fault | None = None
        try:
            fault = await inject(self.target, kind, self.record.now)
            self.faults.append(fault)
        except FaultMissedError as missed:
            self.missed.append(f"{kind}: {missed}")
        await self.fleet.restore(self.options.workers)
        return fault

    async def scenario(self, commands: int, faults: Iterable[str], gap: float = 1.0) -> None:
        """Run the load until ``commands`` were sent and every fault of ``faults`` injected
        (in order, ``gap`` seconds apart, the first after ``gap``)."""
        running = asyncio.create_task(self.load.run())
        try:
            for number, kind in enumerate(faults, start=1):
                await asyncio.sleep(gap)
                await self.inject(kind)
                if number == self.options.sink_after:
                    await self.dispatcher_arrives()
        finally:
            self.load.stop(after=commands)
            await running

    async def dispatcher_arrives(self) -> None:
        """Check that every Send committed so far gets applied while no queue is bound for
        the effects to handlers (within the recovery limit); then bind the sink's."""
        self.load.pause()
        try:
            await self._sends_applied_without_dispatcher()
        finally:
            self.load.resume()
        await self.sink.bind()

    async def _sends_applied_without_dispatcher(self) -> None:
        stored = await read_database(self.services.dsn, self.fleet.namespace)
        self.effects_waited = sum(not is_send(row) for row in stored.outbox)
        due = {row.effect_id for row in unapplied_sends(stored, set())}
        deadline = time.monotonic() + self.options.recovery_limit
        while due and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            stored = await read_database(self.services.dsn, self.fleet.namespace)
            dead_letters = await self.sink.dead_letters()
            due &= {row.effect_id for row in unapplied_sends(stored, dead_letters)}
        for row in stored.outbox:
            if row.effect_id in due:
                self.early.add(
                    "effect_never_published",
                    f"{row.effect_id}: not applied by {target(row)} while no dispatcher was"
                    f" bound ({self.options.recovery_limit:.0f} s)",
                )

    async def finish(self, settle_timeout: float = 60) -> Verdict:
        """Bind the sink if it is not yet, let outboxes and queues drain, query every
        entity, read everything, check."""
        if not self.sink.bound:
            await self.dispatcher_arrives()
        settled = await self._poisons_resolved(settle_timeout)
        settled = await self._settle(settle_timeout) and settled
        stored = await read_database(self.services.dsn, self.fleet.namespace)
        observed = Observed(
            effects=list(self.sink.seen),
            dead_letters=await self.sink.dead_letters(),
            queries=await self._query_all(stored),
        )
        await self._projected(settle_timeout)
        stored = await read_database(self.services.dsn, self.fleet.namespace)
        stall_bound = self.options.stall_bound if self.options.poisoned else None
        violations = check(APP, self.record, stored, observed, stall_bound=stall_bound)
        for kind, found in self.early.found.items():
            violations.found[kind].extend(found)
        unanswered = len(self.record.unanswered())
        routed_again, sink_queue = self.sink.routed_again, await self.sink.queue_state()
        queues = ""
        if not settled:
            queues = await asyncio.to_thread(self._queues)
            await self.fleet.log_stacks()  # where a partition holding deliveries waits
        return Verdict(
            violations, stored, observed, unanswered, settled, routed_again, sink_queue, queues
        )

    def _queues(self) -> str:
        """The namespace's queues (messages ready and unacknowledged, consumers, leader) as
        the private broker's ``rabbitmqctl`` lists them; "" on the machine's broker."""
        services = self.services
        private = services.private.rabbitmq if services.private is not None else None
        ctl = services.cluster.ctl if services.cluster is not None else None
        ctl = ctl or (private.ctl if private is not None else None)
        if ctl is None:
            return ""
        columns = ("name", "messages_ready", "messages_unacknowledged", "consumers", "leader")
        try:
            listed = ctl("list_queues", *columns, "-q")
            # Who holds the unacknowledged: a consumer's channel that counts them (the
            # client's to settle) or none (the broker's own orphans).
            consumers = ctl("list_consumers", *_CONSUMER_COLUMNS, "-q")
            channels = ctl("list_channels", *_CHANNEL_COLUMNS, "-q")
        except ServiceUnavailableError as error:
            return f"the queues could not be listed: {error}"
        namespace = self.fleet.namespace
        ours = [line for line in listed.splitlines() if line.startswith(namespace)]
        ours += ["consumers: " + " ".join(_CONSUMER_COLUMNS)]
        ours += [line for line in consumers.splitlines() if line.startswith(namespace)]
        ours += ["channels: " + " ".join(_CHANNEL_COLUMNS)]
        ours += [line for line in channels.splitlines() if not line.rstrip().endswith("\t0\t0")]
        return "\n".join(ours)

    async def _poisons_resolved(self, timeout: float) -> bool:
        """Wait until every poison sent is quarantined, none waits for a decision or for
        its owner to carry one out, and no command is left parked."""
        sent = {(uuid.UUID(r.entity_id), r.command_id) for r in poisons(self.record)}
        deadline = time.monotonic() + timeout
        while True:
            stored = await read_database(self.services.dsn, self.fleet.namespace)
            rows = {(row.entity_id, row.command_id): row.status for row in stored.quarantine}
            if sent <= rows.keys() and not stored.parked and set(rows.values()) <= {"skipped"}:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(1.0)

    async def _settle(self, timeout: float) -> bool:
        """Wait until no effect, no confirmed command and no timer is still on its way."""
        deadline = time.monotonic() + timeout
        while True:
            # As a dispatcher does now and then; a pass that fails is tried again here.
            with contextlib.suppress(PachydermError):
                await self.sink.route_waiting()
            stored = await read_database(self.services.dsn, self.fleet.namespace)
            observed = Observed(list(self.sink.seen), await self.sink.dead_letters())
            violations = check(APP, self.record, stored, observed)
            counts = violations.counts()
            if counts["effect_never_published"] == counts["lost"] == counts["timer_unfired"] == 0:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(1.0)

    async def _projected(self, timeout: float) -> None:
        """Wait until the projection applied the whole log (or ``timeout`` seconds: then the
        checker finds its read model behind). A projection process must be running."""
        if not self.fleet.live_projections():
            self.fleet.start_projections()  # the last one was killed by the last fault
        deadline = time.monotonic() + timeout
        dsn, namespace = self.services.dsn, self.fleet.namespace
        while await projection_behind(dsn, namespace, PROJECTION) > 0:
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(0.2)

    async def _query_all(self, stored: Stored) -> dict[uuid.UUID, tuple[int, Any]]:
        """Every entity's (version, state) as the fleet answers a query now."""
        gate = asyncio.Semaphore(self.options.limit)
        answers: dict[uuid.UUID, tuple[int, Any]] = {}

        async def ask(ref: Ref) -> None:
            async with gate:
                for _ in range(10):
                    try:
                        answers[ref.id] = await self.client.request(
                            ref, "", None, kind="query", timeout=10
                        )
                        return
                    except (CallTimeoutError, PachydermError):
                        await asyncio.sleep(0.5)

        await asyncio.gather(*(ask(Ref(row.entity_type, row.entity_id)) for row in stored.entities))
        return answers


@asynccontextmanager
async def chaos_run(
    folder: Path, services: Services, options: Options | None = None
) -> AsyncIterator[ChaosRun]:
    """A fleet of ``options.workers`` chaos workers on ``services`` with everything around
    it; the namespace is removed afterwards."""
    options = options or Options()
    namespace = f"chaos_{uuid.uuid4().hex[:12]}"
    async with process_fleet(
        folder,
        namespace,
        services.dsn,
        services.amqp_url,
        app=APP_SPEC,
        partitions=options.partitions,
        cwd=ROOT,
    ) as fleet:
        chaos = ChaosFleet(fleet, options.worker_settings())
        await chaos.restore(options.workers)
        await _create_read_model(services.dsn, namespace)
        chaos.start_projections()
        record = Record()
        raw = RawCaller(services.amqp_url, fleet.topology, record, options.patience)
        async with (
            EffectSink(services.amqp_url, fleet.topology) as sink,
            fleet.client() as client,
            _poison_handling(chaos, services, options) as (operator, supervisor),
        ):
            if options.sink_after is None:
                await sink.bind()
            await raw.start()
            try:
                yield ChaosRun(
                    fleet=chaos,
                    services=services,
                    client=client,
                    raw=raw,
                    sink=sink,
                    record=record,
                    options=options,
                    operator=operator,
                    supervisor=supervisor,
                )
            finally:
                await raw.close()
                await chaos.stop_projections()


@asynccontextmanager
async def _poison_handling(
    fleet: ChaosFleet, services: Services, options: Options
) -> AsyncIterator[tuple[Operator | None, Supervisor | None]]:
    """The run's supervisor and operator, while it runs (none without poisons)."""
    if not options.poisoned:
        yield None, None
        return
    store = await PostgresEventStore.connect(services.dsn, schema=fleet.namespace)
    operator = Operator(store, wait=options.skip_after)
    supervisor = Supervisor(fleet, options.workers)
    tasks = [asyncio.create_task(operator.run()), asyncio.create_task(supervisor.run())]
    try:
        yield operator, supervisor
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()


async def _create_read_model(dsn: str, namespace: str) -> None:
    connection = await asyncpg.connect(dsn, server_settings={"search_path": namespace})
    try:
        await connection.execute(PROJECTED_TABLE)
    finally:
        await connection.close()
