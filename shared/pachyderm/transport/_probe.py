"""Whether a queue or an exchange exists: asked of the broker by a passive declare.

A passive declare of something missing is answered by closing the channel it was
asked on (AMQP's 404), so a probe asks on a channel of its own, opened again after
each miss, never on one that carries other work. The one place the namespace's
partition queues past its count, the hash ring's growth records and a growth's
queues are looked for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import aiormq
from aio_pika.abc import AbstractChannel
from pamqp.commands import Queue

from ._amqp import underlay

_Answer = TypeVar("_Answer")


class Probe:
    """Passive declares on a channel of its own (see the module docstring)."""

    def __init__(self, connection: aiormq.abc.AbstractConnection) -> None:
        self._connection = connection
        self._channel: aiormq.abc.AbstractChannel | None = None

    async def queue(self, name: str) -> Queue.DeclareOk | None:
        """What the broker says of queue ``name`` (messages, consumers), None if missing."""
        return await self._ask(lambda channel: channel.queue_declare(name, passive=True))

    async def exchange(self, name: str) -> bool:
        """Whether exchange ``name`` exists (a passive declare checks no type)."""
        found = await self._ask(lambda channel: channel.exchange_declare(name, passive=True))
        return found is not None

    async def _ask(
        self, ask: Callable[[aiormq.abc.AbstractChannel], Awaitable[_Answer]]
    ) -> _Answer | None:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=False)
        try:
            return await ask(self._channel)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()


@asynccontextmanager
async def probing(channel: AbstractChannel) -> AsyncIterator[Probe]:
    """A probe on the connection of ``channel`` (``channel`` itself is left alone)."""
    probe = Probe((await underlay(channel)).connection)
    try:
        yield probe
    finally:
        await probe.close()
