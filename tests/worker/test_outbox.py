"""The outbox publisher: each effect on its own, so one that keeps failing never blocks another."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from examples import counter
from pachyderm import TransportError, TransportUnavailableError
from pachyderm import _codec as codec
from pachyderm.store import Change, EventStore, NewEffect, NewEvent
from pachyderm.transport import InProcessTransport, Message, Topology
from pachyderm.worker import EffectPublisher
from pachyderm.worker._outbox import backoff


class RefusingTransport:
    """The in-process transport, refusing the effects of the routing keys in ``refused``."""

    def __init__(self) -> None:
        self._inner = InProcessTransport(Topology())
        self.refused: dict[str, Exception] = {}
        self.published: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def publish_effect(self, message: Message) -> None:
        if (error := self.refused.get(message.routing_key)) is not None:
            raise error
        await self._inner.publish_effect(message)
        self.published.append(message.routing_key)


@pytest.fixture
async def transport() -> AsyncIterator[RefusingTransport]:
    transport = RefusingTransport()
    await transport.start()
    yield transport
    await transport.close()


def effect(destination: str) -> NewEffect:
    return NewEffect(uuid.uuid4(), destination, codec.encode({}))


async def leave_in_outbox(store: EventStore, *effects: NewEffect) -> None:
    """What a worker that crashed after its commit leaves behind."""
    event = NewEvent("Increased", codec.encode({"amount": 1}))
    ref = counter.Counter.ref(str(uuid.uuid4()))
    await store.commit([Change(ref, 0, "crashed", [event], b"", list(effects))])


async def test_effects_refused_ahead_of_others_do_not_hold_them_back(
    store: EventStore, transport: RefusingTransport
) -> None:
    transport.refused["effect.refused"] = TransportError("RabbitMQ refused")
    # More refused effects ahead of the good one than one sweep reads at a time.
    await leave_in_outbox(store, *[effect("effect.refused") for _ in range(12)])
    await leave_in_outbox(store, effect("effect.fine"))
    publisher = EffectPublisher(store, transport, grace=0, batch_size=5)
    assert await publisher.sweep_once() == 1
    assert transport.published == ["effect.fine"]
    # The refused ones wait for their back-off, counting their attempts.
    assert await store.pending_effects() == []
    assert await publisher.sweep_once() == 0


async def test_a_batch_with_one_refused_effect_marks_the_others_published(
    store: EventStore, transport: RefusingTransport
) -> None:
    transport.refused["effect.refused"] = TransportError("RabbitMQ refused")
    await leave_in_outbox(store, effect("effect.a"), effect("effect.refused"), effect("effect.b"))
    entries = await store.pending_effects()
    failed = await EffectPublisher(store, transport).publish(entries)
    assert [entry.destination for entry, _ in failed] == ["effect.refused"]
    assert [e.destination for e in await store.pending_effects()] == ["effect.refused"]


async def test_a_refused_effect_is_tried_again_after_its_back_off(
    store: EventStore, transport: RefusingTransport
) -> None:
    transport.refused["effect.flaky"] = TransportError("RabbitMQ refused")
    await leave_in_outbox(store, effect("effect.flaky"))
    publisher = EffectPublisher(store, transport, grace=0)
    assert await publisher.sweep_once() == 0
    assert await store.pending_effects() == []  # not due yet
    del transport.refused["effect.flaky"]
    await asyncio.sleep(backoff(0) + 0.05)
    [waiting] = await store.pending_effects()
    assert waiting.attempts == 1
    assert await publisher.sweep_once() == 1
    assert transport.published == ["effect.flaky"]


async def test_an_unreachable_broker_postpones_nothing(
    store: EventStore, transport: RefusingTransport
) -> None:
    transport.refused["effect.a"] = TransportUnavailableError("RabbitMQ is unavailable")
    await leave_in_outbox(store, effect("effect.a"), effect("effect.b"))
    publisher = EffectPublisher(store, transport, grace=0)
    with pytest.raises(TransportUnavailableError):
        await publisher.sweep_once()
    # Not the effect's fault: it is due again at once, with no attempt counted.
    [left] = await store.pending_effects()
    assert (left.destination, left.attempts) == ("effect.a", 0)


def test_the_back_off_doubles_up_to_five_minutes() -> None:
    assert [backoff(n) for n in range(4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff(8) == 256.0
    assert backoff(9) == backoff(10_000) == 300.0
