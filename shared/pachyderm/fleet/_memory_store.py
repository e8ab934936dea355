"""A membership store in memory, on the event loop's clock: for the simulation and tests.

It keeps the leases as PostgreSQL's ``workers`` table does (same contract suite,
``pachyderm.testing._membership_store_contract``), with the running event loop's
``time()`` as the database's ``now()``: on the simulation's virtual clock it
never waits for real time. It counts what a database would serve (queries by
kind, rows returned), and each query can take a round trip (``latency``
seconds; it reads and writes at the end of it).
"""

from __future__ import annotations

import asyncio
import bisect
import uuid
from collections import Counter
from dataclasses import dataclass, replace

from ._store import Holder, Member, Roll


@dataclass(frozen=True, slots=True)
class _Row:
    info: str
    instance: uuid.UUID
    fleet: str
    started: float
    heartbeat: float


@dataclass(frozen=True, slots=True)
class _Listed:
    """A fleet's live members, valid from ``since`` until ``until`` unless a row is
    written other than by a renewal of a live lease (a million rolls at a thousand
    members would otherwise each walk every row)."""

    members: tuple[Member, ...]
    since: float
    until: float


class MemoryMembershipStore:
    """:class:`~pachyderm.fleet._store.MembershipStore` in a dict (one namespace's table).

    Share one instance between the members of a simulated fleet, as they share a
    database. ``queries`` counts the queries served by kind (``claim``,
    ``renew``, ``renew_and_roll``, ``holder``, ``roll``, ``prune``, ``leave``), ``rows`` the rows
    they returned (a roll returns one per live member).
    """

    def __init__(self, *, latency: float = 0.0) -> None:
        if latency < 0:
            raise ValueError(f"latency must not be negative, not {latency}")
        self.latency = latency
        self.queries: Counter[str] = Counter()
        self.rows = 0
        self._rows: dict[str, _Row] = {}
        self._order: list[str] = []  # the rows' worker ids, sorted: a roll lists in this order
        self._rolls: dict[tuple[str, float], _Listed] = {}

    async def claim(
        self, worker_id: str, instance: uuid.UUID, *, info: str, fleet: str, lease: float
    ) -> bool:
        now = await self._query("claim")
        row = self._rows.get(worker_id)
        if row is not None and row.instance != instance and row.heartbeat > now - lease:
            return False
        self._put(worker_id, _Row(info, instance, fleet, now, now))
        self.rows += 1
        return True

    async def renew(self, worker_id: str, instance: uuid.UUID, *, info: str, fleet: str) -> bool:
        return self._renewed(worker_id, instance, info, fleet, await self._query("renew"))

    async def renew_and_roll(
        self, worker_id: str, instance: uuid.UUID, *, info: str, fleet: str, lease: float
    ) -> Roll | None:
        if not self._renewed(worker_id, instance, info, fleet, await self._query("renew_and_roll")):
            return None
        roll = self.peek(fleet, lease, asyncio.get_running_loop().time())
        self.rows += max(len(roll.members), 1)
        return roll

    async def holder(self, worker_id: str) -> Holder | None:
        now = await self._query("holder")
        row = self._rows.get(worker_id)
        if row is None:
            return None
        self.rows += 1
        return Holder(row.info or "its host and pid unknown", now - row.heartbeat)

    async def roll(self, fleet: str, lease: float) -> Roll:
        roll = self.peek(fleet, lease, await self._query("roll"))
        self.rows += max(len(roll.members), 1)  # PostgreSQL returns one row of arrays
        return roll

    async def prune(self, silent_for: float) -> None:
        now = await self._query("prune")
        for worker_id in [w for w, row in self._rows.items() if row.heartbeat < now - silent_for]:
            self._delete(worker_id)

    async def leave(self, worker_id: str, instance: uuid.UUID) -> None:
        await self._query("leave")
        row = self._rows.get(worker_id)
        if row is not None and row.instance == instance:
            self._delete(worker_id)

    def peek(self, fleet: str, lease: float, now: float) -> Roll:
        """The roll as of ``now``, without a query: for an observer (the simulation), not
        a member (it is neither counted nor delayed)."""
        cached = self._rolls.get((fleet, lease))
        if cached is None or not cached.until > now >= cached.since:
            cached = self._listed(fleet, lease, now)
            self._rolls[(fleet, lease)] = cached
        return Roll(now, cached.members)

    def _listed(self, fleet: str, lease: float, now: float) -> _Listed:
        live = [
            (worker_id, row)
            for worker_id in self._order
            if (row := self._rows[worker_id]).fleet == fleet and row.heartbeat > now - lease
        ]
        members = tuple(Member(worker_id, row.started) for worker_id, row in live)
        # Renewals keep the list as it is until the stalest listed lease could lapse.
        until = min((row.heartbeat for _, row in live), default=now) + lease
        return _Listed(members, now, max(until, now))

    async def close(self) -> None:
        """Nothing to release: the rows stay for the other members sharing this store."""

    def __len__(self) -> int:
        """Rows held, live or not (as ``SELECT count(*) FROM workers``)."""
        return len(self._rows)

    def _renewed(
        self, worker_id: str, instance: uuid.UUID, info: str, fleet: str, now: float
    ) -> bool:
        row = self._rows.get(worker_id)
        if row is None:
            self._put(worker_id, _Row(info, instance, fleet, now, now))
        elif row.instance == instance:
            if any(row.heartbeat <= now - lease for _, lease in self._rolls):
                self._rolls.clear()  # a lapsed lease renewed: it is listed again
            self._rows[worker_id] = replace(row, heartbeat=now)
        else:
            return False
        self.rows += 1
        return True

    def _put(self, worker_id: str, row: _Row) -> None:
        if worker_id not in self._rows:
            bisect.insort(self._order, worker_id)
        self._rows[worker_id] = row
        self._rolls.clear()

    def _delete(self, worker_id: str) -> None:
        del self._rows[worker_id]
        self._rolls.clear()
        del self._order[bisect.bisect_left(self._order, worker_id)]

    async def _query(self, kind: str) -> float:
        """Count one query of ``kind`` and wait its round trip; the store's time then."""
        self.queries[kind] += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        return asyncio.get_running_loop().time()
