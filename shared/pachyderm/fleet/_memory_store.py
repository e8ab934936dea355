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


class MemoryMembershipStore:
    """:class:`~pachyderm.fleet._store.MembershipStore` in a dict (one namespace's table).

    Share one instance between the members of a simulated fleet, as they share a
    database. ``queries`` counts the queries served by kind (``claim``,
    ``renew``, ``holder``, ``roll``, ``prune``, ``leave``), ``rows`` the rows
    they returned (a roll returns one per live member).
    """

    def __init__(self, *, latency: float = 0.0) -> None:
        if latency < 0:
            raise ValueError(f"latency must not be negative, not {latency}")
        self.latency = latency
        self.queries: Counter[str] = Counter()
        self.rows = 0
        self._rows: dict[str, _Row] = {}

    async def claim(
        self, worker_id: str, instance: uuid.UUID, *, info: str, fleet: str, lease: float
    ) -> bool:
        now = await self._query("claim")
        row = self._rows.get(worker_id)
        if row is not None and row.instance != instance and row.heartbeat > now - lease:
            return False
        self._rows[worker_id] = _Row(info, instance, fleet, now, now)
        self.rows += 1
        return True

    async def renew(self, worker_id: str, instance: uuid.UUID, *, info: str, fleet: str) -> bool:
        now = await self._query("renew")
        row = self._rows.get(worker_id)
        if row is None:
            self._rows[worker_id] = _Row(info, instance, fleet, now, now)
        elif row.instance == instance:
            self._rows[worker_id] = replace(row, heartbeat=now)
        else:
            return False
        self.rows += 1
        return True

    async def holder(self, worker_id: str) -> Holder | None:
        now = await self._query("holder")
        row = self._rows.get(worker_id)
        if row is None:
            return None
        self.rows += 1
        return Holder(row.info or "its host and pid unknown", now - row.heartbeat)

    async def roll(self, fleet: str, lease: float) -> Roll:
        now = await self._query("roll")
        members = tuple(
            Member(worker_id, row.started)
            for worker_id, row in sorted(self._rows.items())
            if row.fleet == fleet and row.heartbeat > now - lease
        )
        self.rows += max(len(members), 1)  # PostgreSQL returns one row of arrays
        return Roll(now, members)

    async def prune(self, silent_for: float) -> None:
        now = await self._query("prune")
        for worker_id in [w for w, row in self._rows.items() if row.heartbeat < now - silent_for]:
            del self._rows[worker_id]

    async def leave(self, worker_id: str, instance: uuid.UUID) -> None:
        await self._query("leave")
        row = self._rows.get(worker_id)
        if row is not None and row.instance == instance:
            del self._rows[worker_id]

    async def close(self) -> None:
        """Nothing to release: the rows stay for the other members sharing this store."""

    def __len__(self) -> int:
        """Rows held, live or not (as ``SELECT count(*) FROM workers``)."""
        return len(self._rows)

    async def _query(self, kind: str) -> float:
        """Count one query of ``kind`` and wait its round trip; the store's time then."""
        self.queries[kind] += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        return asyncio.get_running_loop().time()
