"""Fleet membership on PostgreSQL: which workers are live, so which partitions each consumes.

Each worker renews a lease (its heartbeat) in the namespace's ``workers``
table and reads who else is live; every worker derives the same assignment
from that list with :func:`~pachyderm.fleet.assign`. Membership only decides
who *should* consume a partition: commits are version-checked, so two workers
briefly consuming one partition is harmless. What matters is that no partition
stays unconsumed for long: a rebalance leaves one so for at most a heartbeat
interval, a dead worker's for at most ``dead_after`` plus an interval.

A worker id belongs to one process at a time. Each run of a worker (each
:class:`PostgresMembership`) holds its id's row with a random instance token:
it takes the row only when it is free, its own, or its holder's lease has
lapsed, renews and deletes only its own, and stops with
:class:`~pachyderm.DuplicateWorkerError` when another live process holds it.
Two processes sharing an id would otherwise consume the same partitions, and
the first to leave would delete the survivor's row, its lease with it.

Members belong to a ``fleet`` (a group: ``"worker"``, ``"projections"``) and
share the partitions with the live members of their own fleet only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from .._errors import DuplicateWorkerError, StoreError
from ..store._postgres import check_schema_name, translated_errors
from ._assignment import owned_by
from ._port import OnChange

log = logging.getLogger("pachyderm.fleet")

# A worker silent this many times `dead_after` is gone for good (crashed, scaled
# away): its row is deleted so the table does not grow with every restart.
_PRUNE_AFTER_DEATHS = 10

# Join: take the row if it is free, this instance's, or its holder's lease
# lapsed ($4 = dead_after, by the database's clock, as _LIVE judges); no row
# returned means another live instance holds this worker id.
_JOIN = """
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
_HEARTBEAT = """
    INSERT INTO workers (worker_id, info, instance, fleet) VALUES ($1, $2, $3, $4)
    ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now()
     WHERE workers.instance = excluded.instance
    RETURNING true
"""
_HOLDER = """
    SELECT info, extract(epoch FROM now() - heartbeat_at)::float8 AS silent
      FROM workers WHERE worker_id = $1
"""
_LIVE = """
    SELECT worker_id FROM workers WHERE heartbeat_at > now() - $1::interval AND fleet = $2
"""
_PRUNE = "DELETE FROM workers WHERE heartbeat_at < now() - $1::interval"
_LEAVE = "DELETE FROM workers WHERE worker_id = $1 AND instance = $2"

# How long a worker waits for another live process's lease on its id to lapse
# before it gives up, in multiples of dead_after: a crashed worker restarted
# under the same id gets in once the lease of its previous run lapses (within
# dead_after), while a second process under a live worker's id is refused.
_JOIN_PATIENCE = 2


class PostgresMembership:
    """:class:`Membership` in the ``workers`` table of a namespace on PostgreSQL.

    A worker is live while its last heartbeat is younger than ``dead_after``
    seconds by the database's clock, so workers' clocks never need to agree.
    A worker killed outright therefore loses its partitions to the others
    within ``dead_after + heartbeat_interval`` (2 s by default). Every worker
    of a namespace must use the same ``dead_after``, or they disagree on who
    is live and so on the assignment.

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
        fleet: str = "worker",
    ) -> None:
        """Use :meth:`connect`; ``pool``'s sessions must see the namespace's schema first.

        The membership owns ``pool`` and closes it in :meth:`close`.
        """
        _check_timing(heartbeat_interval, dead_after)
        self._pool = pool
        self._worker_id = worker_id
        self.info = info
        self.heartbeat_interval = heartbeat_interval
        self.dead_after = dead_after
        self.fleet = fleet
        # This run of the worker: it holds the worker id's row with this token.
        self.instance = uuid.uuid4()

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
        fleet: str = "worker",
    ) -> PostgresMembership:
        """Join ``fleet`` (its group) of namespace ``schema`` (migrated) as ``worker_id``, on
        a pool of its own.

        Not sharing the event store's pool keeps heartbeats on time when busy
        commits hold every connection of that pool. ``info`` (by default the
        host name and process id) is shown to operators.
        """
        check_schema_name(schema)
        _check_timing(heartbeat_interval, dead_after)
        async with translated_errors():
            pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                # One for the heartbeat, one for a caller asking meanwhile.
                max_size=2,
                server_settings={"search_path": schema, "application_name": "pachyderm-fleet"},
            )
        if info is None:
            info = f"host={socket.gethostname()} pid={os.getpid()}"
        return cls(
            pool,
            worker_id,
            info=info,
            heartbeat_interval=heartbeat_interval,
            dead_after=dead_after,
            fleet=fleet,
        )

    @property
    def worker_id(self) -> str:
        """This worker's name, unique in its fleet."""
        return self._worker_id

    async def join(self) -> None:
        """Register this worker as live now, recording a new start time.

        When another live process holds this worker id, it waits for that
        process's lease to lapse, for up to twice ``dead_after`` (a crashed
        worker restarted under its id gets in), then raises
        :class:`~pachyderm.DuplicateWorkerError` naming that process.
        """
        patience = _Patience(_JOIN_PATIENCE * self.dead_after)
        while (holder := await self._claim()) is not None:
            if patience.exhausted():
                raise self._taken(holder)
            await asyncio.sleep(self.heartbeat_interval)

    async def heartbeat(self) -> None:
        """Renew this worker's lease by the database's clock (registering it if need be).

        Raises :class:`~pachyderm.DuplicateWorkerError` when another process
        took this worker id over (after this one's lease lapsed): this worker
        must stop, not serve beside it.
        """
        async with translated_errors(), self._pool.acquire() as conn:
            renewed = await conn.fetchval(
                _HEARTBEAT, self.worker_id, self.info, self.instance, self.fleet
            )
            holder = None if renewed else await _holder(conn, self.worker_id)
        if holder is not None:
            raise self._lost(holder)

    async def live_workers(self) -> list[str]:
        """The members of this fleet that renewed their lease within the last ``dead_after``
        seconds, sorted."""
        async with translated_errors(), self._pool.acquire() as conn:
            rows = await conn.fetch(_LIVE, timedelta(seconds=self.dead_after), self.fleet)
        return sorted(row["worker_id"] for row in rows)

    async def prune(self) -> None:
        """Delete the rows of workers silent for ten times ``dead_after``: long gone."""
        await self._execute(_PRUNE, timedelta(seconds=self.dead_after * _PRUNE_AFTER_DEATHS))

    async def leave(self) -> None:
        """Deregister this worker at once: the others take its partitions on their next heartbeat.

        It deletes this instance's row only: never that of another process
        which took this worker id over.

        Call it before you stop consuming: the others start on this worker's
        partitions within a heartbeat interval instead of after ``dead_after``.
        """
        await self._execute(_LEAVE, self.worker_id, self.instance)

    async def close(self) -> None:
        """Close the pool (it does not leave: call :meth:`leave` first for a clean exit)."""
        await self._pool.close()

    async def watch(self, on_change: OnChange, partitions: int) -> None:
        """Heartbeat every ``heartbeat_interval`` and report this worker's partitions.

        Joins first, then calls ``on_change`` with the partitions this worker
        owns among ``partitions`` once the first heartbeat succeeds, and again
        whenever they change. Runs until cancelled, and cancelling it does not
        leave (see :class:`Membership` for a clean shutdown).

        Heartbeats run beside ``on_change``, so a slow hand-over never makes
        this worker look dead. Nothing ends the watch but cancellation and
        :class:`~pachyderm.DuplicateWorkerError`, raised when another live
        process holds this worker id at the start (as :meth:`join` does), or
        took it over later: the caller must then stop serving.

        - When the database cannot be reached, it keeps retrying and keeps the
          partitions it has (so a database outage stops no partition), logging
          an error once that lasts longer than ``dead_after``: the others may
          then count this worker dead and consume its partitions too, which
          is safe because commits are version-checked.
        - When ``on_change`` raises, it logs that and calls it again after the
          next heartbeat, until it succeeds.
        """
        live = _Latest()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._keep_alive(live))
                tasks.create_task(self._report(live, on_change, partitions))
        except ExceptionGroup as group:
            # Only _keep_alive ends on its own, and only with this error: raise it as such.
            match group.exceptions:
                case [DuplicateWorkerError() as error]:
                    raise error from None
            raise

    async def _keep_alive(self, live: _Latest) -> None:
        joined = False  # the first contact starts a new run of this worker
        patience = _Patience(_JOIN_PATIENCE * self.dead_after)
        outage = _Outage(self.worker_id, self.dead_after)
        while True:
            try:
                # A heartbeat later than dead_after is worthless: give up and retry.
                async with asyncio.timeout(self.dead_after):
                    if joined:
                        await self.heartbeat()
                    elif (holder := await self._claim()) is not None:
                        if patience.exhausted():
                            raise self._taken(holder)
                    else:
                        joined = True
                    if joined:
                        # Any live worker may prune; on a table of a few rows it costs nothing.
                        await self.prune()
                        live.publish(await self.live_workers())
            except (StoreError, TimeoutError) as error:
                outage.failed(error)
            else:
                outage.ended()
            await asyncio.sleep(self.heartbeat_interval)

    async def _report(self, live: _Latest, on_change: OnChange, partitions: int) -> None:
        reported: list[int] | None = None
        while True:
            workers = await live.next()
            owned = owned_by(partitions, workers, self.worker_id)
            if owned == reported:
                continue
            try:
                await on_change(owned)
            except Exception:
                log.exception("worker %s: on_change(%s) failed; retrying", self.worker_id, owned)
            else:
                log.info("worker %s owns partitions %s of %s", self.worker_id, owned, workers)
                reported = owned

    async def _claim(self) -> _Holder | None:
        """Take this worker id's row for this instance; else who holds it, live."""
        lease = timedelta(seconds=self.dead_after)
        async with translated_errors(), self._pool.acquire() as conn:
            while not await conn.fetchval(
                _JOIN, self.worker_id, self.info, self.instance, lease, self.fleet
            ):
                # Gone since (it left, or was pruned)? Then the row is free: claim again.
                if (holder := await _holder(conn, self.worker_id)) is not None:
                    return holder
            return None

    def _taken(self, holder: _Holder) -> DuplicateWorkerError:
        return DuplicateWorkerError(
            f"worker id {self.worker_id!r} is taken: another live process ({holder.info})"
            f" runs under it (lease renewed {holder.silent:.1f} s ago, still live after"
            f" waiting {_JOIN_PATIENCE * self.dead_after:.1f} s); give each worker an id"
            " of its own (PACHYDERM_WORKER_ID)",
            worker_id=self.worker_id,
            other=holder.info,
        )

    def _lost(self, holder: _Holder) -> DuplicateWorkerError:
        return DuplicateWorkerError(
            f"worker id {self.worker_id!r} was taken over by another process"
            f" ({holder.info}) while this one could not renew its lease; this one stops,"
            " as two processes run under this id: give each worker an id of its own"
            " (PACHYDERM_WORKER_ID)",
            worker_id=self.worker_id,
            other=holder.info,
        )

    async def _execute(self, sql: str, *arguments: object) -> None:
        async with translated_errors(), self._pool.acquire() as conn:
            await conn.execute(sql, *arguments)


@dataclass(frozen=True, slots=True)
class _Holder:
    """The process that holds a worker id: what it told operators, and how long it is silent."""

    info: str
    silent: float


async def _holder(conn: asyncpg.Connection, worker_id: str) -> _Holder | None:
    row = await conn.fetchrow(_HOLDER, worker_id)
    if row is None:
        return None
    return _Holder(row["info"] or "its host and pid unknown", row["silent"])


class _Patience:
    """A time limit that starts counting at the first refusal."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._since: float | None = None

    def exhausted(self) -> bool:
        now = time.monotonic()
        if self._since is None:
            self._since = now
        return now - self._since >= self._seconds


def _check_timing(heartbeat_interval: float, dead_after: float) -> None:
    # One late heartbeat must not make a worker look dead: dead_after should
    # span a few intervals (three by default).
    if not 0 < heartbeat_interval < dead_after:
        raise ValueError(
            f"need 0 < heartbeat_interval ({heartbeat_interval}) < dead_after ({dead_after})"
        )


class _Latest:
    """The newest live-worker list, for a reader that only ever wants the newest."""

    def __init__(self) -> None:
        self._workers: list[str] = []
        self._fresh = asyncio.Event()

    def publish(self, workers: list[str]) -> None:
        self._workers = workers
        self._fresh.set()

    async def next(self) -> list[str]:
        """Wait for a list newer than the last one read, and return it."""
        await self._fresh.wait()
        self._fresh.clear()
        return self._workers


class _Outage:
    """Logs the database failures of one worker's heartbeat, and their end."""

    def __init__(self, worker_id: str, dead_after: float) -> None:
        self._worker_id = worker_id
        self._dead_after = dead_after
        self._since: float | None = None
        self._reported = False

    def failed(self, error: Exception) -> None:
        now = time.monotonic()
        if self._since is None:
            self._since = now
            log.warning("worker %s: heartbeat failed, retrying: %s", self._worker_id, error)
        elif not self._reported and now - self._since > self._dead_after:
            self._reported = True
            log.error(
                "worker %s has not reached the database for %.1f s: other workers may take"
                " over its partitions while it keeps consuming them (commits are"
                " version-checked, so this is safe); still retrying: %s",
                self._worker_id,
                now - self._since,
                error,
            )

    def ended(self) -> None:
        if self._since is not None:
            log.warning(
                "worker %s reached the database again after %.1f s",
                self._worker_id,
                time.monotonic() - self._since,
            )
            self._since = None
            self._reported = False
