"""Membership of a fleet of one: embedded mode, where one worker owns every partition."""

from __future__ import annotations

import asyncio

from ._assignment import owned_by
from ._port import OnChange


class SoloMembership:
    """:class:`Membership` of embedded mode: a fleet of one that owns every partition."""

    def __init__(self, worker_id: str = "solo") -> None:
        self._worker_id = worker_id

    @property
    def worker_id(self) -> str:
        """This worker's name."""
        return self._worker_id

    async def join(self) -> None:
        """Nothing to do: the one worker is always live."""

    async def heartbeat(self) -> None:
        """Nothing to do: the one worker is always live."""

    async def live_workers(self) -> list[str]:
        """Just this worker."""
        return [self.worker_id]

    async def watch(self, on_change: OnChange, partitions: int) -> None:
        """Give this worker every partition, once; then wait until cancelled."""
        await on_change(owned_by(partitions, [self.worker_id], self.worker_id))
        await asyncio.Event().wait()

    async def leave(self) -> None:
        """Nothing to do: there is no one to hand over to."""

    async def close(self) -> None:
        """Nothing to release."""
