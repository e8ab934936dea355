"""An assignment that fails or is cancelled midway (the membership's watch is cancelled
when the broker is lost, maybe during one) leaves no inbox consuming that nobody takes
from: inboxes it opened are closed again, and a partition whose stop it began is
stopped by the next assignment, then served anew if still owned. Such an inbox held a
prefetch window of deliveries for good in the cluster test (commands lost)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

import pytest

from examples import counter
from pachyderm import App, TransportUnavailableError
from pachyderm._wire import command_message
from pachyderm.fleet import SoloMembership
from pachyderm.store import EventStore
from pachyderm.testing._transport_contract import eventually
from pachyderm.transport import Inbox, InProcessTransport, Message, Topology
from pachyderm.worker import Worker
from tests.worker.partition_tasks import in_a_partition

APP = App([counter.Counter])


class Interrupting(InProcessTransport):
    """Refuses to open the inboxes of ``refused``, holds the opening of ``held`` until
    ``opened_held`` is set, and a partition's replies until ``replying`` is set."""

    def __init__(self) -> None:
        super().__init__(Topology(partitions=4))
        self.opened: list[Inbox] = []
        self.refused: set[int] = set()
        self.held: set[int] = set()
        self.opened_held = asyncio.Event()
        self.replying = asyncio.Event()
        self.replies_waiting = asyncio.Event()

    async def open_inbox(self, partition: int, prefetch: int) -> Inbox:
        if partition in self.refused:
            raise TransportUnavailableError("opening an inbox: the broker is restarting")
        if partition in self.held:
            await self.opened_held.wait()
        inbox = await super().open_inbox(partition, prefetch)
        self.opened.append(inbox)
        return inbox

    async def publish_replies(self, messages: Sequence[Message]) -> None:
        if in_a_partition():
            self.replies_waiting.set()
            await self.replying.wait()
        await super().publish_replies(messages)


@pytest.fixture
async def transport() -> Interrupting:
    transport = Interrupting()
    await transport.start()
    return transport


async def closed(inbox: Inbox) -> bool:
    """A closed inbox hands out nothing at once; an open one waits for deliveries."""
    try:
        return await asyncio.wait_for(inbox.take(1), 0.5) == []
    except TimeoutError:
        return False


async def test_inboxes_opened_for_an_assignment_that_failed_are_closed(
    store: EventStore, transport: Interrupting
) -> None:
    worker = Worker(APP, store, transport, SoloMembership("w"))
    transport.refused = {2}
    with pytest.raises(TransportUnavailableError):
        await worker._assign([0, 1, 2, 3])
    await eventually(lambda: len(transport.opened) == 3)
    assert [await closed(inbox) for inbox in transport.opened] == [True] * 3
    assert worker.partitions == {}
    transport.refused.clear()
    await worker._assign([0, 1, 2, 3])  # the next assignment opens them all
    assert sorted(worker.partitions) == [0, 1, 2, 3]
    await worker._assign([])


async def test_inboxes_opened_for_an_assignment_cancelled_are_closed(
    store: EventStore, transport: Interrupting
) -> None:
    worker = Worker(APP, store, transport, SoloMembership("w"))
    transport.held = {3}
    assigning = asyncio.create_task(worker._assign([0, 1, 2, 3]))
    await eventually(lambda: len(transport.opened) == 3)
    assigning.cancel()
    with pytest.raises(asyncio.CancelledError):
        await assigning
    assert [await closed(inbox) for inbox in transport.opened] == [True] * 3
    assert worker.partitions == {}


async def test_a_partition_whose_stop_was_cancelled_is_stopped_and_served_anew(
    store: EventStore, transport: Interrupting
) -> None:
    worker = Worker(APP, store, transport, SoloMembership("w"))
    await worker._assign([0, 1, 2, 3])
    message = command_message(APP, counter.Counter.ref("c"), counter.Increment(amount=1))
    await transport.publish_command(replace(message, reply_to="caller"))
    await asyncio.wait_for(transport.replies_waiting.wait(), 5)  # a batch in flight
    [busy] = [p for p, w in worker.partitions.items() if w._handling.locked()]
    first = worker.partitions[busy]
    releasing = asyncio.create_task(worker._assign([]))
    await eventually(lambda: first.stopping)
    releasing.cancel()  # while the stop waits for the batch
    with pytest.raises(asyncio.CancelledError):
        await releasing
    assert worker.partitions[busy] is first  # not forgotten half stopped
    transport.replying.set()
    await worker._assign([0, 1, 2, 3])
    assert worker.partitions[busy] is not first
    assert not worker.partitions[busy].stopping
    assert await closed(first.inbox)
    await worker._assign([])
