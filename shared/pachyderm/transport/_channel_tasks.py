"""Work on an AMQP channel that the channel's closing ends.

A write that waits for room in the connection's short write queue waits for good
if the connection dies meanwhile: nobody drains that queue any more, and the wait
holds the channel's lock, so every later write waits behind it (seen: a worker's
replies stuck for 180 s after a broker restart, until its stop limit ended it).
Run as a task of its channel, such a write fails with the channel instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiormq


async def on_channel(
    channel: aiormq.abc.AbstractChannel, work: Callable[[], Awaitable[None]]
) -> None:
    """Run ``work`` as a task of ``channel``, which its closing ends: the caller then gets
    :class:`aiormq.exceptions.ChannelInvalidStateError` (its own cancellation stays one)."""
    if channel.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")

    async def run() -> None:
        await work()

    try:
        await channel.create_task(run())
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the caller's own cancellation
        # The channel's closing cancels its tasks: a failure to the caller.
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed") from None
