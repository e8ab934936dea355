"""Ending and erasing entities on the real fleet (a worker process, RabbitMQ, PostgreSQL):
an entity its handler ended answers ``ended`` through the client; an erased one leaves
nothing but its tombstone in the tables and refuses later commands; a rejected first
command leaves no entity row."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from pachyderm import Client, EntityEndedError, EntityErasedError, RejectedError
from pachyderm.store import PostgresEventStore

from ..ending.membership import Close, Join, Membership, Visit
from .harness import Fleet, fleet_fixture

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

# Every table that holds anything of an entity, by the column that names it.
_TABLES = ("entities", "events", "snapshots", "commands", "timers", "event_log", "outbox")


fleet = fleet_fixture("tests.ending.membership:APP", 2)


@pytest.fixture
async def running(fleet: Fleet) -> Fleet:
    fleet.start_worker("w1")
    await fleet.serving_everything()
    return fleet


@pytest.fixture
async def client(running: Fleet) -> AsyncIterator[Client]:
    async with running.client() as started:
        yield started


async def _rows(fleet: Fleet, entity_id: object) -> dict[str, int]:
    connection = await asyncpg.connect(
        fleet.dsn, server_settings={"search_path": fleet.topology.namespace}
    )
    try:
        return {
            table: await connection.fetchval(
                f"SELECT count(*) FROM {table} WHERE entity_id = $1", entity_id
            )
            for table in _TABLES
        }
    finally:
        await connection.close()


async def test_an_entity_ended_by_its_handler_answers_ended(running: Fleet, client: Client) -> None:
    ann = Membership.ref("ann")
    await client.call(ann, Join(name="ann"))
    final = await client.call(ann, Close(reason="moved"))
    assert final == {"name": "ann", "visits": 0, "closed": "moved"}
    with pytest.raises(EntityEndedError) as ended:
        await client.call(ann, Visit())
    assert not isinstance(ended.value, EntityErasedError)
    assert ended.value.version == 2
    assert await client.query(ann) == final  # queries still read the final state
    rows = await _rows(running, ann.id)
    assert (rows["events"], rows["snapshots"], rows["commands"]) == (2, 1, 2)


async def test_erase_leaves_only_the_tombstone_and_refuses_later_commands(
    running: Fleet, client: Client
) -> None:
    bob, other = Membership.ref("bob"), Membership.ref("other")
    await client.call(bob, Join(name="Bob Private"))
    await client.call(bob, Visit())
    await client.call(other, Join(name="other"))
    store = await PostgresEventStore.connect(
        running.dsn, schema=running.topology.namespace, max_size=1
    )
    try:
        erasure = await store.erase(bob)
    finally:
        await store.close()
    assert (erasure.version, erasure.events, erasure.log_rows) == (2, 2, 2)
    assert await _rows(running, bob.id) == dict.fromkeys(_TABLES, 0) | {"entities": 1}
    connection = await asyncpg.connect(
        running.dsn, server_settings={"search_path": running.topology.namespace}
    )
    try:
        tombstone = await connection.fetchrow(
            "SELECT entity_type, ended, ended_version FROM entities WHERE entity_id = $1", bob.id
        )
    finally:
        await connection.close()
    assert dict(tombstone) == {"entity_type": "membership", "ended": "erased", "ended_version": 2}
    # The worker cached bob before the erasure: it is refused all the same.
    with pytest.raises(EntityErasedError):
        await client.call(bob, Visit())
    with pytest.raises(EntityErasedError):
        await client.call(bob, Join(name="Bob Again"))
    with pytest.raises(EntityErasedError):
        await client.query(bob)
    assert (await _rows(running, bob.id))["events"] == 0
    assert (await _rows(running, other.id))["events"] == 1


async def test_a_rejected_first_command_leaves_no_entity_row(
    running: Fleet, client: Client
) -> None:
    cid = Membership.ref("cid")
    for _ in range(2):  # the second: the same command id, redelivered by the caller
        with pytest.raises(RejectedError, match="not_a_member"):
            await client.call(cid, Visit(), command_id="first")
    assert await _rows(running, cid.id) == dict.fromkeys(_TABLES, 0) | {"commands": 1}
    assert await client.call(cid, Join(name="cid")) == {"name": "cid", "visits": 0, "closed": None}
    assert (await _rows(running, cid.id))["entities"] == 1
