"""Growing the partition count of a running fleet (8 -> 16) under load, on the machine's
RabbitMQ and PostgreSQL, with `grow_partitions` (what `pachyderm repartition` runs).

Each entity receives a stream of numbered steps, published one after another
(each confirmed before the next) but never waiting for one to apply, so a
reorder, a loss or a double application leaves an ``OutOfOrder`` event or a
missing step. Invariants checked: every step applied once and in order across
the switch; timers pending at the switch fire; some entities moved to the new
partitions and each entity's events lie in the log in version order, those of
its old partition all before those of its new one (a gap-free, once-each log).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from pachyderm import Client, Ref
from pachyderm import _codec as codec
from pachyderm._repartition import RepartitionError, grow_partitions
from pachyderm.store import LoggedEvent, PostgresEventStore
from pachyderm.transport import RabbitMQTransport, Topology

from ..waiting import eventually
from . import sequence_app
from .harness import Fleet, fleet_fixture, fleet_store

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

OLD, NEW = 8, 16
ENTITIES, STEPS = 64, 40
STEP_INTERVAL = 0.25  # the load lasts about STEPS x this
ALARM_AFTER = 8.0  # due after the switch


def ref(number: int) -> Ref:
    return Ref.from_key("sequence", f"entity-{number}")


# Removed afterwards with the queues and the exchange a growth added.
running = fleet_fixture("tests.integration.sequence_app:app", OLD, name="running")


async def stream(client: Client, entity: int) -> None:
    """Steps 1..STEPS to one entity, in order, each confirmed by the broker."""
    for seq in range(1, STEPS + 1):
        await client.send(ref(entity), sequence_app.Step(seq), command_id=f"{entity}-{seq}")
        await asyncio.sleep(STEP_INTERVAL)


async def repartition(running: Fleet, partitions: int) -> str:
    """Run `pachyderm repartition --to partitions` as an operator would; its output."""
    status, output = await running.command("repartition", "--to", str(partitions), "--grace", "1")
    assert status == 0, output
    return output


async def full_log(store: PostgresEventStore, partitions: int) -> list[LoggedEvent]:
    found: list[LoggedEvent] = []
    for partition in range(partitions):
        after = 0
        while page := await store.read_log(partition, after, 1000):
            found.extend(page)
            after = page[-1].position
    return found


@pytest.fixture
async def store(running: Fleet) -> AsyncIterator[PostgresEventStore]:
    # Opened before the workers start: the machine's database has few connections to spare.
    async with fleet_store(running, max_size=1) as opened:
        yield opened


async def test_growing_under_load_keeps_every_entity_in_order(
    running: Fleet, store: PostgresEventStore
) -> None:
    running.start_worker("old-a")
    running.start_worker("old-b")
    await running.balanced()
    async with running.client() as client:
        await asyncio.gather(
            *(client.call(ref(e), sequence_app.Arm(ALARM_AFTER)) for e in range(ENTITIES))
        )
        load = asyncio.gather(*(stream(client, e) for e in range(ENTITIES)))
        await asyncio.sleep(STEPS * STEP_INTERVAL / 4)
        printed = await repartition(running, NEW)
        assert f"{OLD} -> {NEW} partitions" in printed, printed
        assert printed.count("  partition ") == OLD  # the log heads at the switch
        started = time.monotonic()
        await running.stop()
        running.topology = Topology(running.topology.namespace, NEW)
        running.start_worker("new-a")
        running.start_worker("new-b")
        await running.balanced()
        restarted_in = time.monotonic() - started
        await load
        print(printed, f"workers restarted in {restarted_in:.2f}s")

    async def unsettled() -> dict[int, list[str]]:
        """The entities still short of a step or of their alarm, with their events."""
        found = {}
        for entity in range(ENTITIES):
            events = [e.name for e in await store.history(ref(entity).id)]
            if events.count("Stepped") != STEPS or "Rang" not in events:
                found[entity] = events
        return found

    async def settled() -> bool:
        return not await unsettled()

    try:
        await eventually(settled, timeout=30, interval=0.5)
    except AssertionError:
        short = await unsettled()
        logs = {w.name: w.log.read_text()[-3000:] for w in running.workers}
        raise AssertionError(f"{len(short)} unsettled: {list(short.items())[:3]} {logs}") from None
    log = await full_log(store, NEW)
    for entity in range(ENTITIES):
        history = await store.history(ref(entity).id)
        steps = [codec.decode(e.data) for e in history if e.name in ("Stepped", "OutOfOrder")]
        assert [s["seq"] for s in steps] == list(range(1, STEPS + 1)), (entity, steps)
        assert [e.name for e in history].count("Rang") == 1
    by_entity: dict[uuid.UUID, list[LoggedEvent]] = {}
    for entry in log:
        by_entity.setdefault(entry.event.entity_id, []).append(entry)
    assert sum(map(len, by_entity.values())) == len(log)
    moved = 0
    for entity_id, logged in by_entity.items():
        history = await store.history(entity_id)
        # Each event once in the log; per partition in version order; the old
        # partition's all before the new one's.
        assert sorted(e.event.version for e in logged) == [e.version for e in history]
        in_order = sorted(logged, key=lambda e: e.event.version)
        partitions = list(dict.fromkeys(e.partition for e in in_order))
        assert len(partitions) <= 2, (entity_id, partitions)
        if len(partitions) == 2:
            assert partitions[0] < OLD <= partitions[1], partitions
            moved += 1
    assert moved, "no entity moved to a new partition"


async def test_shrinking_is_refused(running: Fleet) -> None:
    with pytest.raises(RepartitionError, match="only growing"):
        await grow_partitions(running.amqp_url, running.topology, 4)


async def test_a_worker_already_on_the_new_count_is_refused(running: Fleet) -> None:
    grown = Topology(running.topology.namespace, NEW)
    transport = RabbitMQTransport(running.amqp_url, grown)
    await transport.start()
    try:
        inbox = await transport.open_inbox(NEW - 1, 1)
        with pytest.raises(RepartitionError, match=r"partitions \[15\] are consumed"):
            await grow_partitions(running.amqp_url, running.topology, NEW, grace=0)
        await inbox.close()
    finally:
        await transport.close()


async def test_a_growth_whose_fences_timed_out_resumes_and_outgrown_workers_refuse(
    running: Fleet,
) -> None:
    with pytest.raises(RepartitionError, match=r"partitions \[0, 1, .*\] did not answer"):
        await grow_partitions(running.amqp_url, running.topology, NEW, grace=0, timeout=1)
    running.start_worker("late")
    await running.balanced()
    grown = await grow_partitions(running.amqp_url, running.topology, NEW, grace=0, timeout=30)
    assert (grown.old, grown.new) == (OLD, NEW)
    # Once a worker serves the new count, one started on the outgrown count refuses.
    await running.stop()
    running.topology = Topology(running.topology.namespace, NEW)
    running.start_worker("grown")
    await running.balanced()
    running.topology = Topology(running.topology.namespace, OLD)
    stale = running.start_worker("stale")
    assert await asyncio.to_thread(stale.process.wait, 30) == 1
    assert "set PACHYDERM_PARTITIONS to the fleet's count" in stale.log.read_text()
