"""Overload on the real RabbitMQ and PostgreSQL: the worker-wide cap on commands in flight
holds across partitions, the client's in-flight limit holds, and a partition queue at its
length limit with reject-publish makes the client raise OverloadedError and the gateway
answer 429 with Retry-After over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import aio_pika
import pytest

from examples import counter
from pachyderm import CallTimeoutError, Client, FleetUnavailableError, OverloadedError, Ref
from pachyderm.fleet import SoloMembership
from pachyderm.gateway import GatewayOptions, create_app
from pachyderm.store import Change, CommitOutcome, PostgresEventStore
from pachyderm.transport import Delivery, RabbitMQTransport, Topology
from pachyderm.transport._rabbitmq_topology import QueueArgumentsError
from pachyderm.worker import BatchHooks, Worker, WorkerHooks, WorkerOptions

from ..gateway.serving import CALLER, TOKENS, problem, serving

pytestmark = [pytest.mark.rabbitmq]

PARTITIONS = 4


class SlowStore(PostgresEventStore):
    """Commits take a while, so that batches of several partitions overlap."""

    async def commit(self, changes: Sequence[Change]) -> list[CommitOutcome]:
        await asyncio.sleep(0.05)
        return await super().commit(changes)


class Counting(WorkerHooks):
    """How many deliveries are in batches being applied, now and at most."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    @contextmanager
    def _counted(
        self, exchange: str, partition: int, deliveries: Sequence[Delivery]
    ) -> Iterator[BatchHooks]:
        self.now += len(deliveries)
        self.peak = max(self.peak, self.now)
        try:
            with super().batch(exchange, partition, deliveries) as batch:
                yield batch
        finally:
            self.now -= len(deliveries)

    def batch(
        self, exchange: str, partition: int, deliveries: Sequence[Delivery]
    ) -> AbstractContextManager[BatchHooks]:
        return self._counted(exchange, partition, deliveries)


@pytest.fixture
async def topology(namespace: str, rabbitmq_url: str) -> AsyncIterator[Topology]:
    topology = Topology(namespace, PARTITIONS)
    yield topology
    await RabbitMQTransport(rabbitmq_url, topology).delete_topology()


async def served_by_a_worker(
    postgres_dsn: str, rabbitmq_url: str, topology: Topology, max_in_flight: int
) -> int:
    """Call 80 counters at once through a worker with that cap; the peak of deliveries
    in batches being applied at once."""
    store = await SlowStore.connect(postgres_dsn, schema=topology.namespace)
    await store.migrate()
    transport = RabbitMQTransport(rabbitmq_url, topology)
    hooks = Counting()
    options = WorkerOptions(max_in_flight=max_in_flight, max_batch=64)
    worker = Worker(counter.app, store, transport, SoloMembership(), options, hooks=hooks)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(worker.ready.wait(), 10)
        calling = RabbitMQTransport(rabbitmq_url, topology)
        await calling.start()
        client = Client(counter.app, calling, timeout=30)
        await client.start()
        try:
            refs = [counter.Counter.ref(f"c{n}") for n in range(80)]
            replies = await asyncio.gather(
                *(client.call(ref, counter.Increment(amount=1)) for ref in refs)
            )
        finally:
            await client.close()
        assert [reply["count"] for reply in replies] == [1] * len(refs)
        if worker.admission is not None:
            assert worker.admission.in_flight <= max_in_flight
    finally:
        stop.set()
        await running
        await store.drop_namespace()
        await store.close()
    return hooks.peak


@pytest.mark.postgres
async def test_the_worker_wide_cap_on_commands_in_flight_holds(
    postgres_dsn: str, rabbitmq_url: str, topology: Topology
) -> None:
    assert await served_by_a_worker(postgres_dsn, rabbitmq_url, topology, 3) == 3


@pytest.mark.postgres
async def test_without_the_cap_batches_of_partitions_overlap_beyond_it(
    postgres_dsn: str, rabbitmq_url: str, topology: Topology
) -> None:
    # The control: the same load, no cap, goes past 3 at once (the cap test can fail).
    assert await served_by_a_worker(postgres_dsn, rabbitmq_url, topology, 0) > 3


async def test_the_clients_in_flight_limit_holds(rabbitmq_url: str, topology: Topology) -> None:
    # No worker: calls stay in flight until their timeout.
    transport = RabbitMQTransport(rabbitmq_url, topology)
    await transport.start()
    client = Client(counter.app, transport, timeout=2, max_in_flight=3, wait=0.2)
    await client.start()
    try:
        calls = [
            asyncio.create_task(client.call(counter.Counter.ref(f"c{n}"), counter.Increment()))
            for n in range(3)
        ]
        await asyncio.sleep(0.1)
        assert client.in_flight.in_flight == 3
        started = asyncio.get_running_loop().time()
        with pytest.raises(OverloadedError, match="3 calls in flight") as raised:
            await client.send(counter.Counter.ref("late"), counter.Increment())
        assert asyncio.get_running_loop().time() - started >= 0.2  # it waited, bounded
        assert raised.value.cause == "in-flight"
        depths = await transport.queue_depths()
        assert sum(depths[topology.partition_queue(p)] for p in range(PARTITIONS)) == 3
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        assert client.in_flight.in_flight == 0
        await client.send(counter.Counter.ref("later"), counter.Increment())  # room again
    finally:
        await client.close()


@pytest.fixture
async def full_queue(rabbitmq_url: str, namespace: str) -> AsyncIterator[Client]:
    """A client of a one-partition namespace whose queue (2 at most, reject-publish) is
    full: no worker consumes it."""
    topology = Topology(namespace, 1, max_length=2)
    transport = RabbitMQTransport(rabbitmq_url, topology)
    await transport.start()
    client = Client(counter.app, transport, timeout=1)
    await client.start()
    try:
        # A quorum queue checks its limit as it crosses it: it may take one more.
        for n in range(4):
            try:
                await client.send(counter.Counter.ref(f"c{n}"), counter.Increment())
            except OverloadedError:
                break
        yield client
    finally:
        await transport.delete_topology()


async def test_a_full_queue_refuses_a_call_with_overloaded_not_a_timeout(
    full_queue: Client,
) -> None:
    started = asyncio.get_running_loop().time()
    with pytest.raises(OverloadedError, match="partition queue is full") as raised:
        await full_queue.call(counter.Counter.ref("one-more"), counter.Increment())
    assert asyncio.get_running_loop().time() - started < full_queue.timeout
    assert raised.value.cause == "queue-full"
    assert raised.value.retry_after > 0


async def test_a_full_queue_is_answered_429_with_retry_after_by_the_gateway(
    full_queue: Client,
) -> None:
    asgi = create_app(full_queue, None, GatewayOptions(tokens=TOKENS))
    ref = Ref.from_key("counter", "one-more")
    async with serving(asgi) as http:
        response = await http.post(
            f"/entities/counter/{ref.id}/commands/Increment",
            json={"amount": 1},
            headers=CALLER,
        )
    document = problem(response, 429)
    assert document["type"] == "urn:pachyderm:problem:overloaded"
    assert "queue for this entity is full" in document["detail"]
    assert response.headers["Retry-After"] == "1"


async def test_a_queue_declared_with_another_limit_names_the_setting(
    rabbitmq_url: str, topology: Topology
) -> None:
    first = RabbitMQTransport(rabbitmq_url, topology)
    await first.start()
    await first.close()
    limited = Topology(topology.namespace, PARTITIONS, max_length=10)
    with pytest.raises(QueueArgumentsError, match="PACHYDERM_QUEUE_MAX_LENGTH") as raised:
        await RabbitMQTransport(rabbitmq_url, limited).start()
    assert raised.value.queue == topology.partition_queue(0)


async def test_a_full_queue_with_drop_head_dead_letters_the_oldest_command(
    rabbitmq_url: str, namespace: str
) -> None:
    topology = Topology(namespace, 1, max_length=2, overflow="drop-head")
    transport = RabbitMQTransport(rabbitmq_url, topology)
    await transport.start()
    client = Client(counter.app, transport)
    await client.start()
    try:
        ids = [
            await client.send(counter.Counter.ref(f"c{n}"), counter.Increment()) for n in range(4)
        ]
        depths = await transport.queue_depths()
        assert depths[topology.partition_queue(0)] == 2  # the newest two
        async with await aio_pika.connect(rabbitmq_url) as connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(topology.dead_letter_queue, passive=True)
            dropped = [await queue.get(no_ack=True) for _ in range(2)]
        assert [m.message_id for m in dropped] == ids[:2]
        deaths: list[Any] = [dict(m.headers)["x-death"] for m in dropped]
        assert [death[0]["reason"] for death in deaths] == ["maxlen"] * 2
    finally:
        await transport.delete_topology()


async def test_a_fleet_without_workers_is_unavailable_at_once_then_served_when_one_consumes(
    rabbitmq_url: str, topology: Topology
) -> None:
    transport = RabbitMQTransport(rabbitmq_url, topology)
    await transport.start()
    client = Client(counter.app, transport, timeout=0.5, fleet_check=0.2)
    await client.start()
    ref = counter.Counter.ref("c")
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(FleetUnavailableError, match="no worker consumes"):
            await client.call(ref, counter.Increment())
        assert asyncio.get_running_loop().time() - started < client.timeout  # no wait
        assert not any((await transport.queue_depths()).values())  # nothing was sent
        asgi = create_app(client, None, GatewayOptions(tokens=TOKENS))
        async with serving(asgi) as http:
            response = await http.post(
                f"/entities/counter/{ref.id}/commands/Increment", json={}, headers=CALLER
            )
        document = problem(response, 503)
        assert "no worker serves the fleet" in document["detail"]
        assert response.headers["Retry-After"] == "5"
        # One partition consumed: the fleet is there (the call then waits for its reply).
        inbox = await transport.open_inbox(0, prefetch=1)
        await asyncio.sleep(0.25)
        with pytest.raises(CallTimeoutError):
            await client.call(ref, counter.Increment())
        await inbox.close()
    finally:
        await client.close()
