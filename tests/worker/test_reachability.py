"""A worker's probe of its broker: lost once out of reach for its patience, back once
it answers again (the worker leaves the fleet in between; tests/cuts runs it for real)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from pachyderm import TransportUnavailableError
from pachyderm.transport import InProcessTransport, Message, Topology
from pachyderm.worker._reachability import Reachability

PATIENCE = 0.2


class Unplugged(InProcessTransport):
    """An in-process transport whose publishing fails or hangs while told to."""

    def __init__(self) -> None:
        super().__init__(Topology(partitions=1))
        self.way: str | None = None  # "refused", "silent", or None: reachable

    async def publish_replies(self, messages: Sequence[Message]) -> None:
        if self.way == "refused":
            raise TransportUnavailableError("publishing replies: RabbitMQ is unavailable")
        if self.way == "silent":
            await asyncio.Event().wait()  # as publishing waits for a reconnect
        await super().publish_replies(messages)


async def test_a_reachable_broker_is_never_lost() -> None:
    transport = Unplugged()
    await transport.start()
    probe = Reachability(transport, PATIENCE)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(PATIENCE * 3):
            await probe.lost()


@pytest.mark.parametrize("way", ["refused", "silent"])
async def test_the_broker_is_lost_after_its_patience_and_back_once_it_answers(way: str) -> None:
    transport = Unplugged()
    await transport.start()
    probe = Reachability(transport, PATIENCE)
    transport.way = way
    started = time.monotonic()
    await asyncio.wait_for(probe.lost(), PATIENCE * 10)
    assert time.monotonic() - started >= PATIENCE  # not at its first failure

    back = asyncio.create_task(probe.back())
    await asyncio.sleep(PATIENCE)
    assert not back.done()
    transport.way = None
    await asyncio.wait_for(back, PATIENCE * 10)


def test_the_patience_must_be_positive() -> None:
    with pytest.raises(ValueError, match="patience"):
        Reachability(Unplugged(), 0)


class Reconnected(Unplugged):
    """Reachable throughout, but its connection is made again now and then."""

    reconnects = 0


async def test_a_connection_made_again_counts_as_lost_though_the_broker_answers() -> None:
    """Its channels were restored, not opened again: a partition so restored was seen
    to take no delivery again (see the module). Not so for a transport that does not
    count its reconnects."""
    transport = Reconnected()
    await transport.start()
    probe = Reachability(transport, PATIENCE)
    lost = asyncio.create_task(probe.lost())
    await asyncio.sleep(PATIENCE * 2)
    assert not lost.done()
    transport.reconnects += 1
    await asyncio.wait_for(lost, PATIENCE * 2)
