"""The engine across code versions: what it will not decide on, and the snapshots of
another fold it does not trust (two versions of one entity type on one store)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pachyderm import App, NewerSchemaError, Ref, Schedule, Send
from pachyderm import _codec as codec
from pachyderm._entity_type import EntityType
from pachyderm._execution import encode_effect, encode_schedule
from pachyderm._scheduling import TimerSpec
from pachyderm._wire import COMMAND, Request, command_message, effect_message, parse_request
from pachyderm.store import EventStore, OutboxEntry, StoredTimer
from pachyderm.transport import InProcessTransport, Topology
from pachyderm.worker import EffectPublisher, Engine, PartitionWorker, WorkerHooks
from pachyderm.worker._firing import fire_request

from ..integration import tally_v1, tally_v2
from ..test_upcasting import Account, Deposit

V1, V2 = App([tally_v1.Tally]), App([tally_v2.Tally])


def add(app: App, ref: Ref, amount: int) -> Request:
    return Request(ref, app.entity_type(ref.type), tally_v1.Add(amount), str(uuid.uuid4()), COMMAND)


class Counting(WorkerHooks):
    def __init__(self) -> None:
        self.newer: list[tuple[str, type[Exception]]] = []

    def newer_schema(self, entity_type: str, error: Exception) -> None:
        self.newer.append((entity_type, type(error)))


async def test_an_entity_with_a_newer_event_is_not_decided_on_and_the_rest_proceed(
    store: EventStore,
) -> None:
    evolved, plain = Ref.from_key("tally", "evolved"), Ref.from_key("tally", "plain")
    await Engine(V2, store).run([add(V2, evolved, 1)])
    hooks = Counting()
    old = Engine(V1, store, hooks=hooks)
    results, committed = await old.run(
        [add(V1, evolved, 2), add(V1, plain, 3), add(V1, evolved, 4)]
    )
    assert isinstance(results[0].error, NewerSchemaError)
    assert isinstance(results[2].error, NewerSchemaError)
    assert results[1].reply == {"total": 3, "count": 1}
    assert [change.ref for change in committed] == [plain]
    assert hooks.newer == [("tally", NewerSchemaError)]
    assert (await store.load(evolved)).version == 1  # nothing written on a misread state
    assert evolved not in old.cache


async def test_a_snapshot_of_another_fold_is_rebuilt_from_history_and_taken_again(
    store: EventStore,
) -> None:
    ref = Ref.from_key("tally", "snapshotted")
    for amount in (1, 2, 3):
        await Engine(V1, store, snapshot_every=2).run([add(V1, ref, amount)])
    old_snapshot = (await store.load(ref)).snapshot
    assert old_snapshot is not None
    assert old_snapshot.version == 2
    new = Engine(V2, store, snapshot_every=1000)
    results, _ = await new.run([add(V2, ref, 4)])
    assert results[0].reply == {"cents": 1000, "count": 4, "milestones": 0}
    taken = (await store.load(ref)).snapshot
    assert taken is not None
    assert (taken.version, taken.fingerprint) == (4, "state=1;update=2")
    await new.run([add(V2, ref, 5)])  # once taken again, snapshot_every rules again
    latest = (await store.load(ref)).snapshot
    assert latest is not None
    assert latest.version == 4
    loaded = await EntityType(tally_v2.Tally()).load(store, ref)
    assert (loaded.state["cents"], loaded.rebuilt) == (1500, False)


def test_a_send_carries_the_version_of_its_command_and_is_read_as_sent() -> None:
    app = App([Account])
    to = Account.ref("target")
    effect = encode_effect(
        app.entity_type("account"), Send(to, Deposit(5)), uuid.uuid4(), entity_types=app.entity_type
    )
    entry = OutboxEntry(
        effect.effect_id, effect.destination, effect.payload, uuid.uuid4(), "c", datetime.now(UTC)
    )
    kind, message = effect_message(entry)
    assert (kind, message.headers["pachyderm-schema-version"]) == (COMMAND, 2)
    received: Any = parse_request(app, message).message
    assert received == Deposit(5)
    # The same command as an older sender wrote it (in euros): upcast on receipt.
    older = replace(
        message,
        body=codec.encode({"euros": 5}),
        headers={**message.headers, "pachyderm-schema-version": 1},
    )
    assert parse_request(app, older).message == Deposit(500)


def test_a_timer_keeps_the_version_its_command_was_scheduled_with() -> None:
    app = App([Account])
    now = datetime.now(UTC)
    ref = Account.ref("timed")

    def fire(spec: TimerSpec) -> Any:
        assert TimerSpec.decode(spec.encode()) == spec
        timer = StoredTimer(ref.id, "account", "k", 0, now, "s", spec.encode(), now)
        return fire_request(app, timer, now).message

    # Scheduled by older code (before versions: none stored), fired by newer code.
    assert fire(TimerSpec("Deposit", {"euros": 2})) == Deposit(200)
    assert fire(TimerSpec("Deposit", {"cents": 2}, schema_version=2)) == Deposit(2)
    scheduled = encode_schedule(
        app.entity_type("account"),
        Schedule(Deposit(7), after=timedelta(minutes=1)),
        entity_types=app.entity_type,
    )
    assert (scheduled.schema_version, fire(scheduled)) == (2, Deposit(7))


async def test_a_partition_leaves_a_newer_entitys_commands_for_the_next_owner(
    store: EventStore,
) -> None:
    evolved, plain = Ref.from_key("tally", "held"), Ref.from_key("tally", "applied")
    await Engine(V2, store).run([add(V2, evolved, 1)])
    transport = InProcessTransport(Topology(partitions=1))
    await transport.start()
    try:
        old = PartitionWorker(
            await transport.open_inbox(0, prefetch=10),
            V1,
            Engine(V1, store),
            transport,
            EffectPublisher(store, transport),
        )
        held = command_message(V1, evolved, tally_v1.Add(2), command_id="c-held")
        for message in (held, command_message(V1, plain, tally_v1.Add(3)), held):  # a retry
            await transport.publish_command(message)
            await old.handle(await old.inbox.take(10))
        assert (await store.load(evolved)).version == 1  # not decided on
        assert (await store.load(plain)).version == 1
        assert transport.dead_letters == []
        await old.inbox.close()  # the partition moves on: what is unsettled goes back
        new = PartitionWorker(
            await transport.open_inbox(0, prefetch=10),
            V2,
            Engine(V2, store),
            transport,
            EffectPublisher(store, transport),
        )
        deliveries = await new.inbox.take(10)
        assert [d.message.message_id for d in deliveries] == ["c-held"]  # once, not twice
        await new.handle(deliveries)
        assert (await store.load(evolved)).version == 2
    finally:
        await transport.close()
