"""Whether a worker reaches its broker: a worker holds a lease on partitions only while
it can consume them.

The probe is the readiness check's (:func:`~pachyderm.telemetry.broker_check`): a
reply to an address nobody listens at, which the broker drops. While the connection
is lost and aio-pika reconnects, publishing waits for the reconnect, so the probe
times out. A connection that is up but silent (a network cut that drops packets
rather than refusing them) is noticed only once the AMQP heartbeat gives it up:
put ``heartbeat=<seconds>`` in the AMQP URL to bound that (aiormq closes the
connection after about three heartbeats; the default, 60, takes three minutes).

A connection lost and made again within the patience counts as lost too, on a
transport that counts its reconnects (:class:`Reconnecting`: RabbitMQ's): aio-pika
restores the channels of the old connection, consumers included, and a partition so
restored was seen to take no delivery again while its queue held dozens for it,
unacknowledged (a three-node cluster's rolling restart, session 18); a worker that
left and opened its partitions again never was. So the worker leaves and joins again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol, runtime_checkable

from ..telemetry import broker_check
from ..transport import Transport

log = logging.getLogger("pachyderm.worker")


@runtime_checkable
class Reconnecting(Protocol):
    """A transport that counts the times its connection was made again."""

    @property
    def reconnects(self) -> int: ...


class Reachability:
    """Probes ``transport``'s broker every quarter of ``patience`` seconds."""

    def __init__(self, transport: Transport, patience: float) -> None:
        if patience <= 0:
            raise ValueError(f"broker patience must be positive, not {patience}")
        self._probe = broker_check(transport)
        self._patience = patience
        self._transport = transport

    def _reconnects(self) -> int:
        return self._transport.reconnects if isinstance(self._transport, Reconnecting) else 0

    async def lost(self) -> None:
        """Return once the broker has been out of reach for ``patience`` seconds, or
        the connection was made again (see the module)."""
        loop = asyncio.get_running_loop()
        since: float | None = None
        reconnects = self._reconnects()
        while True:
            if self._reconnects() != reconnects:
                log.warning("the broker connection was lost and made again")
                return
            if await self._reaches():
                since = None
            elif since is None:
                since = loop.time()
            if since is not None and loop.time() - since >= self._patience:
                return
            await asyncio.sleep(self._patience / 4)

    async def back(self) -> None:
        """Return once the broker is within reach again."""
        while True:
            if await self._reaches():
                return
            await asyncio.sleep(self._patience / 4)

    async def _reaches(self) -> bool:
        try:
            async with asyncio.timeout(self._patience / 2):
                await self._probe()
        except Exception as error:  # any failure of the probe: out of reach
            log.debug("broker probe failed: %r", error)
            return False
        return True
