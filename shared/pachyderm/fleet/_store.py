"""The membership store port: the leases a fleet's members hold, and nothing else.

:class:`~pachyderm.fleet.PostgresMembership` keeps its leases in a namespace's
``workers`` table (:class:`~pachyderm.fleet._postgres.PostgresMembershipStore`);
the simulation of a fleet keeps them in memory, on a virtual clock
(:class:`~pachyderm.fleet._memory_store.MemoryMembershipStore`). Both pass the
same contract suite (``pachyderm.testing._membership_store_contract``).

Invariants every backend keeps:

- Times are the store's own clock (seconds): a lease is current while its last
  renewal is younger than the ``lease`` a reader gives, so the members' clocks
  never need to agree.
- A worker id's row belongs to one instance (one run of the worker) at a time:
  it is taken only when free, already this instance's, or its lease lapsed;
  renewed and deleted only by its instance.
- Members belong to one fleet (a group) and are listed with their own fleet's only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Holder:
    """The instance holding a worker id: what it told operators, and how long it is silent."""

    info: str
    silent: float


@dataclass(frozen=True, slots=True)
class Member:
    """A live member of a fleet: its worker id, and when this run of it started."""

    worker_id: str
    started: float
    """The store's clock, in seconds, when this run joined (the same clock as :attr:`Roll.now`)."""


@dataclass(frozen=True, slots=True)
class Roll:
    """The live members of a fleet (sorted by worker id), as the store saw them at ``now``."""

    now: float
    members: tuple[Member, ...]

    @property
    def workers(self) -> list[str]:
        return [member.worker_id for member in self.members]


class MembershipStore(Protocol):
    """Where a fleet's members hold their leases (see the module's invariants)."""

    async def claim(
        self, worker_id: str, instance: uuid.UUID, *, info: str, fleet: str, lease: float
    ) -> bool:
        """Take ``worker_id``'s row for ``instance``, starting a new run of it (its
        ``started`` is now), if the row is free, this instance's, or its holder's
        lease (younger than ``lease`` seconds) lapsed; False if another live
        instance holds it."""

    async def renew(self, worker_id: str, instance: uuid.UUID, *, info: str, fleet: str) -> bool:
        """Renew ``instance``'s lease (creating the row if it is gone, as after pruning);
        False if another instance holds the row."""

    async def renew_and_roll(
        self, worker_id: str, instance: uuid.UUID, *, info: str, fleet: str, lease: float
    ) -> Roll | None:
        """:meth:`renew`, then :meth:`roll` of ``fleet`` (``worker_id`` in it), in one round
        trip: a heartbeat's one query. None, and nothing listed, if another instance holds
        the row."""

    async def holder(self, worker_id: str) -> Holder | None:
        """Who holds ``worker_id``'s row, if anyone."""

    async def roll(self, fleet: str, lease: float) -> Roll:
        """The members of ``fleet`` that renewed their lease within the last ``lease`` seconds."""

    async def prune(self, silent_for: float) -> None:
        """Delete the rows of members silent for longer than ``silent_for`` seconds."""

    async def leave(self, worker_id: str, instance: uuid.UUID) -> None:
        """Delete ``worker_id``'s row if ``instance`` holds it (never another's)."""

    async def close(self) -> None:
        """Release the store's resources."""
