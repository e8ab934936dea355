"""The membership port: how a worker learns which partitions to consume.

Backends implement :class:`Membership`: :class:`~pachyderm.fleet.PostgresMembership`
for a fleet, :class:`~pachyderm.fleet.SoloMembership` for embedded mode. This
module imports no database library, so code that only needs the port (the
worker, the embedded mode) never loads one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeAlias, runtime_checkable

OnChange: TypeAlias = Callable[[list[int]], Awaitable[None]]
"""What :meth:`Membership.watch` calls with the (sorted) partitions this worker now owns."""


class Membership(Protocol):
    """The port through which a worker learns which partitions to consume.

    A worker runs :meth:`watch` for as long as it serves. To shut down cleanly
    it cancels the watch, calls :meth:`leave` while still consuming (the others
    take over within a heartbeat interval), stops consuming, then calls
    :meth:`close`.
    """

    @property
    def worker_id(self) -> str:
        """This worker's name, unique in its fleet."""

    async def join(self) -> None:
        """Register this worker as live, starting a new run of it."""

    async def heartbeat(self) -> None:
        """Renew this worker's lease."""

    async def live_workers(self) -> list[str]:
        """The workers whose lease is current, this one included if it is."""

    async def watch(self, on_change: OnChange, partitions: int) -> None:
        """Keep this worker live and report its partitions to ``on_change``, until cancelled
        or until it cannot go on: :class:`~pachyderm.DuplicateWorkerError` when another
        process took this worker's id over."""

    async def leave(self) -> None:
        """Deregister this worker: the others take over its partitions."""

    async def close(self) -> None:
        """Release the resources of this membership."""


@runtime_checkable
class Abandons(Protocol):
    """A membership that can give its lease up from any thread while its worker's event
    loop is blocked (the handler budget's watchdog does before it ends the process)."""

    def abandon(self) -> None:
        """Give the lease up at once, best effort (on failure it lapses by itself)."""
