"""A rolling deploy on the real fleet: two versions of one entity type's code
(``tally_v1``, ``tally_v2``: an upcaster, a new event, another fold) serving one
namespace at once.

1. The first version alone writes every tally (events at schema version 1, and
   snapshots by its fold).
2. The second version alone adds to the "evolved" tallies: it does not trust the
   first version's snapshots (the state is folded from every event, upcast) and
   snapshots them again with its own fingerprint.
3. An old worker comes back beside the new one (a pod of the old version restarted
   mid-rollout), owning about half of the partitions. Commands flow to every
   tally: the old worker applies those to tallies it can read, and leaves those to
   evolved tallies unsettled (it never decides on a state it would misread);
   the callers keep retrying with the same command ids.
4. The old worker leaves (the rollout completes): the new one answers the rest.

Every command is answered and applied once; no history has an event of the first
version after one of the second; the second version's fold of each history is what
the commands add up to.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from typing import Any

import asyncpg
import pytest

from pachyderm import CallTimeoutError, Client, Ref
from pachyderm._entity_type import EntityType
from pachyderm.fleet import assign
from pachyderm.store import PostgresEventStore
from pachyderm.testing import ProcessFleet

from . import tally_v1, tally_v2
from .harness import fleet_fixture

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

PARTITIONS = 8
V1, V2 = "tests.integration.tally_v1:APP", "tests.integration.tally_v2:APP"
OLD, NEW, OLD_AGAIN = "old-v1", "new-v2", "old-v1-again"
TALLIES = 24


fleet = fleet_fixture(V2, PARTITIONS)


def tally(number: int) -> Ref:
    return Ref.from_key("tally", f"t{number}")


async def add(client: Client, ref: Ref, amount: int, command_id: str) -> Any:
    """Call until answered: a timeout means "not yet", so the same command goes again."""
    for _ in range(30):
        try:
            return await client.call(ref, tally_v2.Add(amount), command_id=command_id, timeout=3)
        except CallTimeoutError:
            continue
    raise AssertionError(f"{ref}: command {command_id} never answered")


async def stop(worker: Any) -> None:
    worker.process.send_signal(signal.SIGTERM)
    await asyncio.to_thread(worker.process.wait, 30)


async def fetch(dsn: str, namespace: str, query: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn, server_settings={"search_path": namespace})
    try:
        return list(await connection.fetch(query))
    finally:
        await connection.close()


async def test_old_and_new_workers_at_once_never_misread_and_answer_everything(
    fleet: ProcessFleet, namespace: str, postgres_dsn: str
) -> None:
    sent: dict[Ref, int] = {}  # euros added to each tally, by commands answered
    async with Client.connect(fleet.settings(), tally_v2.APP, name="rollout") as client:

        async def send(ref: Ref, amount: int) -> Any:
            reply = await add(client, ref, amount, str(uuid.uuid4()))
            sent[ref] = sent.get(ref, 0) + amount
            return reply

        # 1. The first version alone: three additions to each (snapshots at version 2).
        old = fleet.start_worker(OLD, app=V1, snapshot_every="2")
        await fleet.balanced()
        for round_ in range(3):
            await asyncio.gather(*(send(tally(n), n + round_) for n in range(TALLIES)))
        await stop(old)

        # Where each tally lives, and which partitions the old worker will own beside
        # the new one: the evolved tallies are those of both kinds of partition.
        rows = await fetch(
            postgres_dsn, namespace, "SELECT DISTINCT entity_id, partition FROM event_log"
        )
        partition_of = {row["entity_id"]: row["partition"] for row in rows}
        old_owns = set(assign(PARTITIONS, [OLD_AGAIN, NEW])[OLD_AGAIN])
        on_old = [n for n in range(TALLIES) if partition_of[tally(n).id] in old_owns]
        evolved = list(range(0, TALLIES, 2))
        fresh = [n for n in range(TALLIES) if n not in evolved]

        # 2. The second version alone (it snapshots only what it does not trust).
        fleet.start_worker(NEW, app=V2, snapshot_every="1000")
        await fleet.balanced()
        replies = await asyncio.gather(*(send(tally(n), 1) for n in evolved))
        for n, reply in zip(evolved, replies, strict=True):
            # Folded from every event, upcast: the old snapshot's state has no cents.
            assert reply == {"cents": sent[tally(n)] * 100, "count": 4, "milestones": 0}
        await assert_snapshots_retaken(fleet, evolved)

        # 3. An old worker again, beside the new one; commands to every tally.
        again = fleet.start_worker(OLD_AGAIN, app=V1, snapshot_every="2")
        await fleet.balanced()
        assert again.owned() == old_owns
        calls = [asyncio.create_task(send(tally(n), 10)) for n in range(TALLIES)]
        held = [n for n in evolved if n in on_old]
        only_old = [n for n in fresh if n in on_old]  # tallies the old worker still serves
        assert held, "the old worker would own none of the evolved tallies"
        assert only_old, "the old worker would own none of the others"
        readable = [n for n in range(TALLIES) if n not in held]
        await asyncio.wait_for(
            asyncio.gather(*(calls[n] for n in readable)), timeout=60
        )  # the old worker applies what it can read; the new one the rest of its own
        await asyncio.sleep(4)  # a retry or more of the held ones
        assert not any(calls[n].done() for n in held), "a held command was answered"
        log = again.log.read_text()
        assert all(str(tally(n)) in log for n in held), log[-3000:]

        # 4. The rollout completes: the old worker leaves, the new one answers the rest.
        await stop(again)
        await asyncio.wait_for(asyncio.gather(*calls), timeout=120)

    await assert_histories(postgres_dsn, namespace, sent, only_old)


async def assert_snapshots_retaken(fleet: ProcessFleet, evolved: list[int]) -> None:
    store = await PostgresEventStore.connect(fleet.dsn, schema=fleet.topology.namespace)
    try:
        for n in evolved:
            snapshot = (await store.load(tally(n))).snapshot
            assert snapshot is not None
            assert (snapshot.version, snapshot.fingerprint) == (4, "state=1;update=2")
    finally:
        await store.close()


async def assert_histories(
    dsn: str, namespace: str, sent: dict[Ref, int], only_old: list[int]
) -> None:
    """Gapless; no first-version event after a second-version one; each command once;
    the second version's fold of each history is what its commands added up to."""
    rows = await fetch(
        dsn,
        namespace,
        "SELECT entity_id, version, name, schema_version, command_id FROM events"
        " ORDER BY entity_id, version",
    )
    by_entity: dict[uuid.UUID, list[asyncpg.Record]] = {}
    for row in rows:
        by_entity.setdefault(row["entity_id"], []).append(row)
    for ref in sent:
        events = by_entity[ref.id]
        assert [e["version"] for e in events] == list(range(1, len(events) + 1))
        written = [(e["name"], e["schema_version"]) for e in events]
        # Once the second version wrote, the first never decided again.
        first_new = next((i for i, w in enumerate(written) if w != ("Added", 1)), len(written))
        assert ("Added", 1) not in written[first_new:], f"{ref}: {written}"
        adds = [e["command_id"] for e in events if e["name"] == "Added"]
        assert len(adds) == len(set(adds)), f"{ref}: a command applied twice"
    store = await PostgresEventStore.connect(dsn, schema=namespace)
    try:
        v2 = EntityType(tally_v2.Tally())
        for ref, euros in sent.items():
            state = (await v2.load(store, ref)).state
            assert state["cents"] == euros * 100, ref
        # What only the first version wrote, it still reads.
        v1 = EntityType(tally_v1.Tally())
        for n in only_old:
            assert (await v1.load(store, tally(n))).state["total"] == sent[tally(n)]
    finally:
        await store.close()
