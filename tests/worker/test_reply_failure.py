"""A committed batch whose replies cannot be published is handed back to its queue, not
left unsettled (holding its prefetch places) until the partition moves: it comes again
and is answered from its stored reply, applied once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

from examples import counter
from pachyderm import App, TransportUnavailableError
from pachyderm._wire import command_message, read_reply
from pachyderm.fleet import SoloMembership
from pachyderm.store import EventStore
from pachyderm.testing._transport_contract import eventually, listening
from pachyderm.transport import InProcessTransport, Message, Topology
from pachyderm.worker import EffectPublisher, Engine, PartitionWorker, Worker
from pachyderm.worker._quarantine import PartitionQuarantine
from tests.worker.partition_tasks import in_a_partition

APP = App([counter.Counter])


class Flaky(InProcessTransport):
    """A partition's first publishing of replies fails, as on a channel that closed on
    its own (by default with the transport's error; or with the CancelledError aiormq
    raises at a task nobody cancelled, should one get past the transport)."""

    def __init__(self, error: BaseException | None = None) -> None:
        super().__init__(Topology(partitions=1))
        self.failed = 0
        self.error = error or TransportUnavailableError("publishing replies: the channel closed")

    async def publish_replies(self, messages: Sequence[Message]) -> None:
        if in_a_partition() and not self.failed:
            self.failed += 1
            raise self.error
        await super().publish_replies(messages)


async def test_a_batch_whose_replies_fail_comes_again_and_gets_its_stored_reply(
    store: EventStore,
) -> None:
    transport = Flaky()
    await transport.start()
    address, replies = await listening(transport)
    inbox = await transport.open_inbox(0, prefetch=10)
    partition = PartitionWorker(
        inbox, APP, Engine(APP, store), transport, EffectPublisher(store, transport)
    )
    ref = counter.Counter.ref("c")
    message = command_message(APP, ref, counter.Increment(amount=5), command_id="once")
    await transport.publish_command(replace(message, reply_to=address))
    partition.start()
    try:
        await eventually(lambda: len(replies) == 1)
    finally:
        await partition.stop()
        await transport.close()
    assert transport.failed == 1
    [reply] = replies
    assert read_reply(reply) == (1, {"count": 5})
    loaded = await store.load(ref)
    assert loaded.version == 1  # applied once: the second delivery found its stored reply


async def test_a_partition_outlives_a_cancellation_nobody_asked_for(store: EventStore) -> None:
    """A CancelledError raised at the partition's task from below (aiormq's, had the
    transport let it through) fails that batch, not the partition: the next command is
    answered."""
    transport = Flaky(asyncio.CancelledError())
    await transport.start()
    address, replies = await listening(transport)
    inbox = await transport.open_inbox(0, prefetch=10)
    partition = PartitionWorker(
        inbox, APP, Engine(APP, store), transport, EffectPublisher(store, transport)
    )
    partition.start()
    try:
        for command_id in ("cut-off", "next"):
            message = command_message(
                APP,
                counter.Counter.ref(command_id),
                counter.Increment(amount=1),
                command_id=command_id,
            )
            await transport.publish_command(replace(message, reply_to=address))
            await asyncio.sleep(0.1)  # one batch each
        await eventually(lambda: len(replies) == 1)
    finally:
        await partition.stop()
        await transport.close()
    assert [reply.correlation_id for reply in replies] == ["next"]


async def test_so_it_does_through_a_workers_admission_and_quarantine(store: EventStore) -> None:
    transport = Flaky()
    await transport.start()
    address, replies = await listening(transport)
    worker = Worker(APP, store, transport, SoloMembership("w"))
    assert worker.options.max_in_flight  # its partitions' inboxes are admitted ...
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    ref = counter.Counter.ref("c")
    message = command_message(APP, ref, counter.Increment(amount=5), command_id="once")
    try:
        await asyncio.wait_for(worker.ready.wait(), 5)
        assert isinstance(worker.partitions[0].inbox, PartitionQuarantine)  # ... and watched
        await transport.publish_command(replace(message, reply_to=address))
        await eventually(lambda: len(replies) == 1)
    finally:
        stop.set()
        await running
        await transport.close()
    assert transport.failed == 1
    assert read_reply(replies[0]) == (1, {"count": 5})
