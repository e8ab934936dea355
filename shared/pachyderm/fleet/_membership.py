"""Fleet membership on PostgreSQL: the leases in a namespace's ``workers`` table.

:class:`PostgresMembershipStore` is the :class:`~pachyderm.fleet._store.MembershipStore`
of a namespace (times are the database's ``now()``), and
:class:`PostgresMembership` the membership a worker process runs on it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import uuid
from datetime import timedelta

import asyncpg

from ..store._postgres import check_schema_name, translated_errors
from ._lease_keeper import LeaseKeeper
from ._leased import LeasedMembership, check_timing
from ._store import Holder, Member, Roll

# Claim: take the row if it is free, this instance's, or its holder's lease
# lapsed ($4 = the lease, by the database's clock, as _ROLL judges); no row
# returned means another live instance holds this worker id.
_CLAIM = """
    INSERT INTO workers (worker_id, info, instance, fleet) VALUES ($1, $2, $3, $5)
    ON CONFLICT (worker_id) DO UPDATE
       SET info = excluded.info, instance = excluded.instance, fleet = excluded.fleet,
           started_at = now(), heartbeat_at = now()
     WHERE workers.instance = excluded.instance
        OR workers.heartbeat_at <= now() - $4::interval
    RETURNING true
"""
# An upsert, not an update: a worker whose row was pruned while it could not
# reach the database comes back instead of staying invisible for ever. It
# renews only this instance's row: no row returned means another process took
# this worker id over while this one could not renew its lease.
_RENEW = """
    INSERT INTO workers (worker_id, info, instance, fleet) VALUES ($1, $2, $3, $4)
    ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now()
     WHERE workers.instance = excluded.instance
    RETURNING true
"""
# The heartbeat's one query: renew (as _RENEW), then list the fleet (as _ROLL). The
# listing reads the table as it was before the renewal, so the renewed row is
# listed from what the renewal returned.
_RENEW_AND_ROLL = """
    WITH renewed AS (
        INSERT INTO workers (worker_id, info, instance, fleet) VALUES ($1, $2, $3, $4)
        ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now()
         WHERE workers.instance = excluded.instance
        RETURNING worker_id, started_at, fleet
    ), live AS (
        SELECT worker_id, started_at FROM workers
         WHERE heartbeat_at > now() - $5::interval AND fleet = $4 AND worker_id <> $1
        UNION ALL
        SELECT worker_id, started_at FROM renewed WHERE fleet = $4
    )
    SELECT EXISTS (SELECT FROM renewed) AS renewed,
           extract(epoch FROM now())::float8 AS now,
           coalesce(array_agg(worker_id ORDER BY worker_id), '{}') AS workers,
           coalesce(array_agg(extract(epoch FROM started_at)::float8 ORDER BY worker_id), '{}')
               AS started
      FROM live
"""
_HOLDER = """
    SELECT info, extract(epoch FROM now() - heartbeat_at)::float8 AS silent
      FROM workers WHERE worker_id = $1
"""
# One row whatever the fleet: the database's clock, and the live members' ids and starts.
_ROLL = """
    SELECT extract(epoch FROM now())::float8 AS now,
           coalesce(array_agg(worker_id ORDER BY worker_id), '{}') AS workers,
           coalesce(array_agg(extract(epoch FROM started_at)::float8 ORDER BY worker_id), '{}')
               AS started
      FROM workers WHERE heartbeat_at > now() - $1::interval AND fleet = $2
"""
_PRUNE = "DELETE FROM workers WHERE heartbeat_at < now() - $1::interval"
_LEAVE = "DELETE FROM workers WHERE worker_id = $1 AND instance = $2"
# The lease keeper's renewal (._lease_keeper): this instance's row only, only while its
# lease holds ($3), and never a new row (one given up by abandon() stays gone).
_RENEW_HELD = """
    UPDATE workers SET heartbeat_at = now()
     WHERE worker_id = $1 AND instance = $2 AND heartbeat_at > now() - $3::interval
    RETURNING true
"""
# Seconds abandon() may take to connect and to delete: it runs while its worker is
# stalled, just before the process ends; the lease lapses by itself anyway.
_ABANDON_TIMEOUT = 1.0

log = logging.getLogger("pachyderm.fleet")


class PostgresMembershipStore:
    """:class:`~pachyderm.fleet._store.MembershipStore` in the ``workers`` table of the
    namespace ``pool``'s sessions see (it owns ``pool`` and closes it)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim(
        self, worker_id: str, instance: uuid.UUID, *, info: str, fleet: str, lease: float
    ) -> bool:
        async with translated_errors(), self._pool.acquire() as conn:
            taken = await conn.fetchval(
                _CLAIM, worker_id, info, instance, timedelta(seconds=lease), fleet
            )
        return bool(taken)

    async def renew(self, worker_id: str, instance: uuid.UUID, *, info: str, fleet: str) -> bool:
        async with translated_errors(), self._pool.acquire() as conn:
            renewed = await conn.fetchval(_RENEW, worker_id, info, instance, fleet)
        return bool(renewed)

    async def renew_and_roll(
        self, worker_id: str, instance: uuid.UUID, *, info: str, fleet: str, lease: float
    ) -> Roll | None:
        async with translated_errors(), self._pool.acquire() as conn:
            row = await conn.fetchrow(
                _RENEW_AND_ROLL, worker_id, info, instance, fleet, timedelta(seconds=lease)
            )
        assert row is not None  # an aggregate without GROUP BY: always one row
        return _roll(row) if row["renewed"] else None

    async def holder(self, worker_id: str) -> Holder | None:
        async with translated_errors(), self._pool.acquire() as conn:
            row = await conn.fetchrow(_HOLDER, worker_id)
        if row is None:
            return None
        return Holder(row["info"] or "its host and pid unknown", row["silent"])

    async def roll(self, fleet: str, lease: float) -> Roll:
        async with translated_errors(), self._pool.acquire() as conn:
            row = await conn.fetchrow(_ROLL, timedelta(seconds=lease), fleet)
        assert row is not None  # an aggregate without GROUP BY: always one row
        return _roll(row)

    async def prune(self, silent_for: float) -> None:
        await self._execute(_PRUNE, timedelta(seconds=silent_for))

    async def leave(self, worker_id: str, instance: uuid.UUID) -> None:
        await self._execute(_LEAVE, worker_id, instance)

    async def close(self) -> None:
        await self._pool.close()

    async def _execute(self, sql: str, *arguments: object) -> None:
        async with translated_errors(), self._pool.acquire() as conn:
            await conn.execute(sql, *arguments)


def _roll(row: asyncpg.Record) -> Roll:
    members = zip(row["workers"], row["started"], strict=True)
    return Roll(row["now"], tuple(Member(worker, started) for worker, started in members))


async def _pool(dsn: str, schema: str, dead_after: float) -> asyncpg.Pool:
    """A pool of the membership's own, in namespace ``schema``.

    Not sharing the event store's pool keeps heartbeats on time when busy
    commits hold every connection of that pool. A statement waits ``dead_after``
    at most, as a heartbeat later than that is worthless: without the limit, a
    network cut that drops packets would hold the connection's return to the pool
    after a heartbeat given up (its reset), for ever, and the worker would never
    learn that its lease lapsed.
    """
    check_schema_name(schema)
    async with translated_errors():
        return await asyncpg.create_pool(
            dsn,
            min_size=1,
            # One for the heartbeat, one for a caller asking meanwhile.
            max_size=2,
            server_settings={"search_path": schema, "application_name": "pachyderm-fleet"},
            command_timeout=dead_after,
        )


class PostgresMembership(LeasedMembership):
    """:class:`Membership` in the ``workers`` table of a namespace on PostgreSQL.

    A worker is live while its last heartbeat is younger than ``dead_after``
    seconds by the database's clock, so workers' clocks never need to agree.
    A worker killed outright therefore loses its partitions to the others
    within ``dead_after + heartbeat_interval`` (2 s by default). Every worker
    of a namespace must use the same ``dead_after`` and ``join_delay``, or
    they disagree on who is live and so on the assignment.

    Each instance is one run of its worker and holds the worker id alone: a
    second process under a live worker's id is refused with
    :class:`~pachyderm.DuplicateWorkerError` (see :meth:`join`), and a
    worker whose id another process took over stops with it (see :meth:`watch`).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        worker_id: str,
        *,
        info: str = "",
        heartbeat_interval: float = 0.5,
        dead_after: float = 1.5,
        join_delay: float | None = None,
        fleet_size: int | None = None,
        fleet: str = "worker",
    ) -> None:
        """Use :meth:`connect`; ``pool``'s sessions must see the namespace's schema first.

        The membership owns ``pool`` and closes it in :meth:`close`.
        """
        super().__init__(
            PostgresMembershipStore(pool),
            worker_id,
            info=info,
            heartbeat_interval=heartbeat_interval,
            dead_after=dead_after,
            join_delay=join_delay,
            fleet_size=fleet_size,
            fleet=fleet,
        )
        self._address: tuple[str, str] | None = None  # (dsn, schema), for abandon()

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        worker_id: str,
        schema: str = "pachyderm",
        info: str | None = None,
        heartbeat_interval: float = 0.5,
        dead_after: float = 1.5,
        join_delay: float | None = None,
        fleet_size: int | None = None,
        fleet: str = "worker",
        pause_tolerance: float = 0.0,
    ) -> PostgresMembership:
        """Join ``fleet`` (its group) of namespace ``schema`` (migrated) as ``worker_id``, on
        a pool of its own.

        ``fleet_size``: how many members the deployment runs, if known (see
        :mod:`._settling`). ``info`` (by default the host name and process id) is shown
        to operators. While the event loop is blocked, a thread renews the lease for up
        to ``pause_tolerance`` seconds (0: not at all; see :mod:`._lease_keeper`).
        """
        check_schema_name(schema)
        check_timing(heartbeat_interval, dead_after, join_delay)
        pool = await _pool(dsn, schema, dead_after)
        if info is None:
            info = f"host={socket.gethostname()} pid={os.getpid()}"
        membership = cls(
            pool,
            worker_id,
            info=info,
            heartbeat_interval=heartbeat_interval,
            dead_after=dead_after,
            join_delay=join_delay,
            fleet_size=fleet_size,
            fleet=fleet,
        )
        membership._address = (dsn, schema)
        if pause_tolerance > 0:
            membership.keeper = LeaseKeeper(
                membership._renewal, interval=heartbeat_interval, tolerance=pause_tolerance
            )
        return membership

    def _renewal(self) -> _HeldRenewal:
        assert self._address is not None, "made by connect()"
        return _HeldRenewal(*self._address, self.worker_id, self.instance, self.dead_after)

    def abandon(self) -> None:
        """Give the lease up at once, from any thread, on a connection of its own: the
        worker's event loop (and its pool with it) may be blocked, as when the handler
        budget's watchdog ends a stalled worker. The others then take its partitions
        on their next heartbeat instead of after ``dead_after``. Best effort, blocking
        the calling thread for a few seconds at most: on failure the lease lapses by
        itself."""
        if self._address is None:
            return  # made from a pool: no address to connect to
        dsn, schema = self._address

        async def leave() -> None:
            connection = await _aside(dsn, schema)
            try:
                await connection.execute(
                    _LEAVE, self.worker_id, self.instance, timeout=_ABANDON_TIMEOUT
                )
            finally:
                await connection.close(timeout=_ABANDON_TIMEOUT)

        def run() -> None:
            try:
                asyncio.run(leave())
            except Exception as error:
                log.warning("giving up the lease of %s failed: %s", self.worker_id, error)

        # On a thread (and loop) of its own: the calling thread may be running a loop.
        thread = threading.Thread(target=run, name="pachyderm-abandon", daemon=True)
        thread.start()
        thread.join(3 * _ABANDON_TIMEOUT)


async def _aside(dsn: str, schema: str) -> asyncpg.Connection:
    """A connection beside the membership's pool, for a thread whose loop is not the pool's."""
    return await asyncpg.connect(
        dsn,
        timeout=_ABANDON_TIMEOUT,
        server_settings={"search_path": schema, "application_name": "pachyderm-fleet"},
    )


class _HeldRenewal:
    """The :class:`~._lease_keeper.Renewal` of one instance's lease, on a connection of its
    own (made at the first renewal, on the keeper thread's loop)."""

    def __init__(
        self, dsn: str, schema: str, worker_id: str, instance: uuid.UUID, lease: float
    ) -> None:
        self._address = (dsn, schema)
        self._row = (worker_id, instance, timedelta(seconds=lease))
        self._connection: asyncpg.Connection | None = None

    async def renew(self) -> bool:
        if self._connection is None:
            self._connection = await _aside(*self._address)
        renewed = await self._connection.fetchval(_RENEW_HELD, *self._row, timeout=_ABANDON_TIMEOUT)
        return bool(renewed)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close(timeout=_ABANDON_TIMEOUT)
