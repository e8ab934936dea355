"""The transport contract: every backend, ours or a third party's, runs these same tests.

Invariant: the suite uses only the public :mod:`pachyderm` and
:mod:`pachyderm.transport` APIs (never ``tests/`` or ``examples/``), so a
backend that passes it routes, delivers and settles as RabbitMQ and the
in-process transport do. It needs pytest and pytest-asyncio, which is why
:mod:`pachyderm.testing` loads it only on first use.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Protocol

import pytest

from .. import TransportError
from ..transport import Delivery, Inbox, Message, MessageHandler, Transport

# How long a test waits for what must happen, and watches for what must not.
PATIENCE = 5.0
QUIET = 0.2

DeadLetters = Callable[[int], Awaitable[list[Message]]]
"""The ``dead_lettered`` fixture's value: waits for that many dead letters, returns them."""


class InspectableTransport(Transport, Protocol):
    """A transport that also reports its queue depths, as both of ours do.

    The contract counts the messages waiting in each queue (the partitions', the
    dead letters') by their names in :attr:`~pachyderm.transport.Transport.topology`.
    """

    async def queue_depths(self) -> dict[str, int]: ...


def command(key: str, body: bytes = b"") -> Message:
    return Message(body, routing_key=key, message_id=uuid.uuid4().hex)


async def publish_commands(transport: Transport, key: str, count: int) -> list[bytes]:
    """Publish ``count`` commands for ``key``, numbered in their bodies."""
    bodies = [f"{key}#{number}".encode() for number in range(count)]
    for body in bodies:
        await transport.publish_command(command(key, body))
    return bodies


async def eventually(check: Callable[[], bool | Awaitable[bool]]) -> None:
    """Wait until ``check`` holds, failing after :data:`PATIENCE` seconds."""
    async with asyncio.timeout(PATIENCE):
        while True:
            outcome = check()
            if inspect.isawaitable(outcome):
                outcome = await outcome
            if outcome:
                return
            await asyncio.sleep(0.01)


async def ready_by_partition(transport: InspectableTransport) -> dict[int, int]:
    """The partitions holding ready messages, with how many each holds."""
    depths = await transport.queue_depths()
    topology = transport.topology
    counts = {p: depths[topology.partition_queue(p)] for p in range(topology.partitions)}
    return {partition: ready for partition, ready in counts.items() if ready}


async def only_ready_partition(transport: InspectableTransport) -> int:
    ready = await ready_by_partition(transport)
    assert len(ready) == 1, f"expected one partition to hold messages: {ready}"
    [partition] = ready
    return partition


async def listening(transport: Transport) -> tuple[str, list[Message]]:
    """A reply address of ``transport``, and the list the replies to it arrive in."""
    received: list[Message] = []

    async def on_reply(message: Message) -> None:
        received.append(message)

    return await transport.listen_replies(on_reply), received


async def collect(inbox: Inbox, count: int) -> list[Delivery]:
    """Take exactly ``count`` deliveries, however many takes it needs."""
    taken: list[Delivery] = []
    async with asyncio.timeout(PATIENCE):
        while len(taken) < count:
            taken += await inbox.take(count - len(taken))
    return taken


async def take(inbox: Inbox, max_count: int) -> list[Delivery]:
    """``inbox.take``, failing after :data:`PATIENCE` seconds rather than hanging."""
    return await asyncio.wait_for(inbox.take(max_count), PATIENCE)


async def nothing_more(inbox: Inbox) -> None:
    """Show that ``take`` keeps waiting: nothing else is deliverable."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(inbox.take(10), QUIET)


def bodies_of(deliveries: list[Delivery]) -> list[bytes]:
    return [delivery.message.body for delivery in deliveries]


class TransportContract:
    """The tests every :class:`~pachyderm.transport.Transport` backend must pass.

    Subclass it in a test module, under a name pytest collects (``Test...``),
    and define two fixtures:

    - ``transport``: an :class:`InspectableTransport`, started, on a namespace
      of the test's own with at least two partitions; the fixture closes it
      and removes what it declared at teardown.
    - ``dead_lettered``: a :data:`DeadLetters`, which waits until that many
      messages of the namespace were dead-lettered and returns them.

    ::

        class TestMyTransport(TransportContract):
            @pytest.fixture
            async def transport(self) -> AsyncIterator[MyTransport]:
                async with my_transport(Topology(f"test_{uuid.uuid4().hex}", 4)) as transport:
                    yield transport

            @pytest.fixture
            def dead_lettered(self, transport: MyTransport) -> DeadLetters:
                return transport.wait_for_dead_letters

    The tests are coroutines: run them with pytest-asyncio in auto mode
    (``asyncio_mode = "auto"``).
    """

    # -- commands and partitions ------------------------------------------------

    async def test_a_command_reaches_one_partition_with_every_property(
        self, transport: InspectableTransport
    ) -> None:
        sent = Message(
            b"\x00payload\xff",
            routing_key=str(uuid.uuid4()),
            message_id="m-1",
            correlation_id="c-1",
            reply_to="replies.somewhere",
            content_type="application/msgpack",
            type="Deposit",
            headers={"trace": "t-1", "attempt": 2},
        )
        await transport.publish_command(sent)
        partition = await only_ready_partition(transport)
        assert await ready_by_partition(transport) == {partition: 1}
        inbox = await transport.open_inbox(partition, prefetch=10)
        [delivery] = await collect(inbox, 1)
        assert delivery.message == sent
        assert (delivery.partition, delivery.redelivered) == (partition, False)

    async def test_one_routing_key_always_lands_in_one_partition(
        self, transport: InspectableTransport
    ) -> None:
        await publish_commands(transport, "the-same-entity", 6)
        assert list((await ready_by_partition(transport)).values()) == [6]

    async def test_distinct_routing_keys_spread_over_partitions(
        self, transport: InspectableTransport
    ) -> None:
        for _ in range(40):
            await transport.publish_command(command(str(uuid.uuid4())))
        ready = await ready_by_partition(transport)
        assert sum(ready.values()) == 40
        assert len(ready) > 1, f"40 keys all went to one partition: {ready}"

    async def test_one_keys_commands_arrive_in_publish_order(
        self, transport: InspectableTransport
    ) -> None:
        bodies = await publish_commands(transport, "ordered", 20)
        inbox = await transport.open_inbox(await only_ready_partition(transport), prefetch=50)
        assert bodies_of(await collect(inbox, 20)) == bodies

    # -- taking ---------------------------------------------------------------------

    async def test_take_returns_what_is_buffered_up_to_max_count(
        self, transport: InspectableTransport
    ) -> None:
        bodies = await publish_commands(transport, "batched", 5)
        inbox = await transport.open_inbox(await only_ready_partition(transport), prefetch=10)
        await asyncio.sleep(QUIET)  # lets a broker push all five to the inbox
        first = await take(inbox, 2)
        rest = await take(inbox, 10)
        assert (bodies_of(first), bodies_of(rest)) == (bodies[:2], bodies[2:])

    async def test_take_waits_for_a_delivery(self, transport: InspectableTransport) -> None:
        await transport.publish_command(command("waited-for", b"early"))
        partition = await only_ready_partition(transport)
        inbox = await transport.open_inbox(partition, prefetch=10)
        assert bodies_of(await collect(inbox, 1)) == [b"early"]
        await nothing_more(inbox)
        waiting = asyncio.create_task(inbox.take(10))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await transport.publish_command(command("waited-for", b"late"))
        assert bodies_of(await asyncio.wait_for(waiting, PATIENCE)) == [b"late"]

    async def test_prefetch_bounds_unsettled_deliveries(
        self, transport: InspectableTransport
    ) -> None:
        bodies = await publish_commands(transport, "throttled", 6)
        inbox = await transport.open_inbox(await only_ready_partition(transport), prefetch=2)
        held = await collect(inbox, 2)
        await nothing_more(inbox)
        await inbox.ack(held[:1])
        assert bodies_of(await collect(inbox, 1)) == [bodies[2]]
        await nothing_more(inbox)

    async def test_bad_arguments_are_refused(self, transport: InspectableTransport) -> None:
        with pytest.raises(ValueError, match="partition"):
            await transport.open_inbox(transport.topology.partitions, prefetch=1)
        with pytest.raises(ValueError, match="prefetch"):
            await transport.open_inbox(0, prefetch=0)
        inbox = await transport.open_inbox(0, prefetch=1)
        with pytest.raises(ValueError, match="max_count"):
            await inbox.take(0)

    # -- settling -------------------------------------------------------------------

    async def test_acknowledged_deliveries_are_not_delivered_again(
        self, transport: InspectableTransport
    ) -> None:
        bodies = await publish_commands(transport, "acked", 5)
        partition = await only_ready_partition(transport)
        inbox = await transport.open_inbox(partition, prefetch=10)
        taken = await collect(inbox, 5)
        await inbox.ack(taken[:2])  # the oldest unsettled
        await inbox.ack(taken[3:4])  # one in the middle
        await inbox.close()
        again = await transport.open_inbox(partition, prefetch=10)
        back = await collect(again, 2)
        assert [(d.message.body, d.redelivered) for d in back] == [
            (bodies[2], True),
            (bodies[4], True),
        ]
        await nothing_more(again)

    async def test_closing_an_inbox_returns_unsettled_deliveries_in_order(
        self, transport: InspectableTransport
    ) -> None:
        bodies = await publish_commands(transport, "returned", 6)
        partition = await only_ready_partition(transport)
        first = await transport.open_inbox(partition, prefetch=5)  # the last stays queued
        await collect(first, 5)
        await first.close()
        assert await take(first, 10) == []
        second = await transport.open_inbox(partition, prefetch=10)
        back = await collect(second, 6)
        # Back in front of the message never delivered, as they were.
        assert [(d.message.body, d.redelivered) for d in back] == [
            *((body, True) for body in bodies[:5]),
            (bodies[5], False),
        ]

    async def test_dead_lettered_deliveries_reach_the_dead_letter_queue(
        self, transport: InspectableTransport, dead_lettered: DeadLetters
    ) -> None:
        await publish_commands(transport, "poison", 2)
        inbox = await transport.open_inbox(await only_ready_partition(transport), prefetch=10)
        poison, healthy = await collect(inbox, 2)
        await inbox.dead_letter([poison])
        await inbox.ack([healthy])
        dead_letter_queue = transport.topology.dead_letter_queue

        async def one_dead_letter() -> bool:
            return (await transport.queue_depths())[dead_letter_queue] == 1

        await eventually(one_dead_letter)
        [dead] = await dead_lettered(1)
        assert (dead.body, dead.message_id) == (poison.message.body, poison.message.message_id)

    async def test_requeued_deliveries_come_again_in_order_and_settled_ones_do_not(
        self, transport: InspectableTransport
    ) -> None:
        bodies = await publish_commands(transport, "requeued", 4)
        inbox = await transport.open_inbox(await only_ready_partition(transport), prefetch=10)
        taken = await collect(inbox, 4)
        await inbox.ack(taken[1:2])
        await inbox.requeue(taken[:3])  # the acknowledged one is skipped
        again = await collect(inbox, 2)
        assert [(d.message.body, d.redelivered) for d in again] == [
            (bodies[0], True),
            (bodies[2], True),
        ]
        await inbox.ack([*again, taken[3]])
        await inbox.requeue(taken)  # all settled (or handed back before): nothing
        await nothing_more(inbox)

    async def test_settling_a_delivery_twice_is_refused(
        self, transport: InspectableTransport
    ) -> None:
        await transport.publish_command(command("twice"))
        inbox = await transport.open_inbox(await only_ready_partition(transport), prefetch=10)
        delivery = await collect(inbox, 1)
        await inbox.ack(delivery)
        with pytest.raises(ValueError, match="settled before"):
            await inbox.ack(delivery)
        with pytest.raises(ValueError, match="settled before"):
            await inbox.dead_letter(delivery)

    # -- replies ----------------------------------------------------------------------

    async def test_replies_reach_their_own_listener_only(
        self, transport: InspectableTransport
    ) -> None:
        received: dict[str, list[Message]] = defaultdict(list)

        def listener(name: str) -> MessageHandler:
            async def on_reply(message: Message) -> None:
                received[name].append(message)

            return on_reply

        first = await transport.listen_replies(listener("first"))
        second = await transport.listen_replies(listener("second"))
        assert first != second
        to_first = Message(b"one", routing_key=first, message_id="r-1", correlation_id="c-1")
        to_second = Message(b"two", routing_key=second, message_id="r-2", correlation_id="c-2")
        await transport.publish_replies([to_first, to_second])
        await eventually(lambda: len(received) == 2)
        assert received == {"first": [to_first], "second": [to_second]}

    async def test_replies_sent_together_arrive_in_order_whatever_their_size(
        self, transport: InspectableTransport
    ) -> None:
        address, received = await listening(transport)
        # Larger than an AMQP frame (128 KiB by default): it travels in several.
        sizes = [0, 10, 300_000, 10]
        sent = [
            Message(bytes([n]) * size, routing_key=address, correlation_id=f"c-{n}")
            for n, size in enumerate(sizes)
        ]
        await transport.publish_replies(sent)
        await eventually(lambda: len(received) == len(sent))
        assert [(m.correlation_id, m.body) for m in received] == [
            (m.correlation_id, m.body) for m in sent
        ]

    async def test_a_reply_to_an_address_nobody_listens_on_is_dropped(
        self, transport: InspectableTransport
    ) -> None:
        address, received = await listening(transport)
        await transport.publish_replies(
            [Message(b"lost", routing_key=f"{address}-gone"), Message(b"kept", routing_key=address)]
        )
        await eventually(lambda: len(received) == 1)
        await asyncio.sleep(QUIET)
        assert [message.body for message in received] == [b"kept"]

    # -- effects ----------------------------------------------------------------------

    async def test_effects_reach_the_groups_whose_patterns_match(
        self, transport: InspectableTransport
    ) -> None:
        received: dict[str, list[str]] = defaultdict(list)

        def recorder(group: str) -> MessageHandler:
            async def handle(message: Message) -> None:
                received[group].append(message.routing_key)

            return handle

        patterns = {
            "mailer": ["effect.mailer"],
            "everything": ["effect.#"],
            "billing": ["effect.billing.*", "effect.refund"],
        }
        for group, routing_keys in patterns.items():
            await transport.consume_effects(group, routing_keys, recorder(group))
        for key in [
            "effect.mailer",
            "effect.billing.invoice",
            "effect.billing.invoice.pdf",
            "effect.refund",
            "effect",
        ]:
            await transport.publish_effect(Message(key.encode(), routing_key=key, message_id=key))
        expected = {
            "mailer": ["effect.mailer"],
            "everything": [
                "effect",
                "effect.billing.invoice",
                "effect.billing.invoice.pdf",
                "effect.mailer",
                "effect.refund",
            ],
            "billing": ["effect.billing.invoice", "effect.refund"],
        }

        def as_expected() -> bool:
            return {group: sorted(keys) for group, keys in received.items()} == expected

        await eventually(as_expected)
        await asyncio.sleep(QUIET)
        assert as_expected(), received

    async def test_an_effect_nobody_is_bound_for_waits_for_its_handler(
        self, transport: Transport
    ) -> None:
        received: list[Message] = []

        async def handle(message: Message) -> None:
            received.append(message)

        sent = Message(
            b"x", routing_key="effect.late", message_id="e-1", headers={"pachyderm-effect-id": "1"}
        )
        await transport.publish_effect(sent)
        assert await transport.route_waiting_effects() == (1, 1)  # nobody wants it yet
        await transport.consume_effects("late", ["effect.late"], handle)
        assert await transport.route_waiting_effects() == (1, 0)
        await eventually(lambda: len(received) == 1)
        [got] = received
        assert (got.body, got.routing_key, got.message_id) == (b"x", "effect.late", "e-1")
        assert got.headers["pachyderm-effect-id"] == "1"
        await asyncio.sleep(QUIET)
        assert len(received) == 1

    async def test_routing_again_leaves_the_effects_still_unwanted_waiting(
        self, transport: Transport
    ) -> None:
        received: list[str] = []

        async def handle(message: Message) -> None:
            received.append(message.routing_key)

        for key in ("effect.first", "effect.second", "effect.first"):
            await transport.publish_effect(Message(key.encode(), routing_key=key))
        await transport.consume_effects("first", ["effect.first"], handle)
        assert await transport.route_waiting_effects() == (3, 1)
        await transport.consume_effects("second", ["effect.second"], handle)
        assert await transport.route_waiting_effects() == (1, 0)
        await eventually(lambda: len(received) == 3)
        assert sorted(received) == ["effect.first", "effect.first", "effect.second"]

    async def test_an_effect_whose_handler_raises_is_dead_lettered(
        self, transport: InspectableTransport, dead_lettered: DeadLetters
    ) -> None:
        handled: list[bytes] = []

        async def handle(message: Message) -> None:
            handled.append(message.body)
            if message.body == b"poison":
                raise RuntimeError("the mail server said no")

        await transport.consume_effects("flaky", ["effect.flaky"], handle)
        for body in (b"poison", b"healthy"):
            await transport.publish_effect(Message(body, routing_key="effect.flaky"))
        [dead] = await dead_lettered(1)
        assert dead.body == b"poison"
        await eventually(lambda: b"healthy" in handled)
        assert handled.count(b"poison") == 1

    # -- lifecycle ----------------------------------------------------------------------

    async def test_starting_again_is_harmless(self, transport: InspectableTransport) -> None:
        await transport.start()
        await transport.publish_command(command("restarted", b"still works"))
        inbox = await transport.open_inbox(await only_ready_partition(transport), prefetch=1)
        assert bodies_of(await collect(inbox, 1)) == [b"still works"]

    async def test_closing_the_transport_ends_takes_on_open_inboxes(
        self, transport: InspectableTransport
    ) -> None:
        inbox = await transport.open_inbox(0, prefetch=1)
        waiting = asyncio.create_task(inbox.take(1))
        await asyncio.sleep(0.05)
        await transport.close()
        assert await asyncio.wait_for(waiting, PATIENCE) == []
        assert await take(inbox, 1) == []
        await transport.close()
        with pytest.raises(TransportError, match="not started"):
            await transport.publish_command(command("too-late"))
