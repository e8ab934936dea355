"""Fleet membership on PostgreSQL: which workers are live, so which partitions each consumes.

Each worker renews a lease (its heartbeat) in the namespace's ``workers``
table and reads who else is live; every worker derives the same assignment
from that list with :func:`~pachyderm.fleet.assign`. Membership only decides
who *should* consume a partition: commits are version-checked, so two workers
briefly consuming one partition is harmless. What matters is that no partition
stays unconsumed for long: a rebalance leaves one so for at most a heartbeat
interval, a dead worker's for at most ``dead_after`` plus an interval.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from datetime import timedelta

import asyncpg

from .._errors import StoreError
from ..store._postgres import check_schema_name, translated_errors
from ._assignment import owned_by
from ._port import OnChange

log = logging.getLogger("pachyderm.fleet")

# A worker silent this many times `dead_after` is gone for good (crashed, scaled
# away): its row is deleted so the table does not grow with every restart.
_PRUNE_AFTER_DEATHS = 10

_JOIN = """
    INSERT INTO workers (worker_id, info) VALUES ($1, $2)
    ON CONFLICT (worker_id) DO UPDATE
       SET info = excluded.info, started_at = now(), heartbeat_at = now()
"""
# An upsert, not an update: a worker whose row was pruned while it could not
# reach the database comes back instead of staying invisible for ever.
_HEARTBEAT = """
    INSERT INTO workers (worker_id, info) VALUES ($1, $2)
    ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now()
"""
_LIVE = "SELECT worker_id FROM workers WHERE heartbeat_at > now() - $1::interval"
_PRUNE = "DELETE FROM workers WHERE heartbeat_at < now() - $1::interval"
_LEAVE = "DELETE FROM workers WHERE worker_id = $1"


class PostgresMembership:
    """:class:`Membership` in the ``workers`` table of a namespace on PostgreSQL.

    A worker is live while its last heartbeat is younger than ``dead_after``
    seconds by the database's clock, so workers' clocks never need to agree.
    A worker killed outright therefore loses its partitions to the others
    within ``dead_after + heartbeat_interval`` (2 s by default). Every worker
    of a namespace must use the same ``dead_after``, or they disagree on who
    is live and so on the assignment.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        worker_id: str,
        *,
        info: str = "",
        heartbeat_interval: float = 0.5,
        dead_after: float = 1.5,
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
    ) -> PostgresMembership:
        """Join the fleet of namespace ``schema`` (migrated) as ``worker_id``, on a pool of its own.

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
        )

    @property
    def worker_id(self) -> str:
        """This worker's name, unique in its fleet."""
        return self._worker_id

    async def join(self) -> None:
        """Register this worker as live now, recording a new start time."""
        await self._execute(_JOIN, self.worker_id, self.info)

    async def heartbeat(self) -> None:
        """Renew this worker's lease by the database's clock (registering it if need be)."""
        await self._execute(_HEARTBEAT, self.worker_id, self.info)

    async def live_workers(self) -> list[str]:
        """The workers that renewed their lease within the last ``dead_after`` seconds, sorted."""
        async with translated_errors(), self._pool.acquire() as conn:
            rows = await conn.fetch(_LIVE, timedelta(seconds=self.dead_after))
        return sorted(row["worker_id"] for row in rows)

    async def prune(self) -> None:
        """Delete the rows of workers silent for ten times ``dead_after``: long gone."""
        await self._execute(_PRUNE, timedelta(seconds=self.dead_after * _PRUNE_AFTER_DEATHS))

    async def leave(self) -> None:
        """Deregister this worker at once: the others take its partitions on their next heartbeat.

        Call it before you stop consuming: the others start on this worker's
        partitions within a heartbeat interval instead of after ``dead_after``.
        """
        await self._execute(_LEAVE, self.worker_id)

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
        this worker look dead. Nothing ends the watch but cancellation:

        - When the database cannot be reached, it keeps retrying and keeps the
          partitions it has (so a database outage stops no partition), logging
          an error once that lasts longer than ``dead_after``: the others may
          then count this worker dead and consume its partitions too, which
          is safe because commits are version-checked.
        - When ``on_change`` raises, it logs that and calls it again after the
          next heartbeat, until it succeeds.
        """
        live = _Latest()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._keep_alive(live))
            tasks.create_task(self._report(live, on_change, partitions))

    async def _keep_alive(self, live: _Latest) -> None:
        renew = self.join  # the first contact starts a new run of this worker
        outage = _Outage(self.worker_id, self.dead_after)
        while True:
            try:
                # A heartbeat later than dead_after is worthless: give up and retry.
                async with asyncio.timeout(self.dead_after):
                    await renew()
                    # Any live worker may prune; on a table of a few rows it costs nothing.
                    await self.prune()
                    live.publish(await self.live_workers())
            except (StoreError, TimeoutError) as error:
                outage.failed(error)
            else:
                outage.ended()
                renew = self.heartbeat
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

    async def _execute(self, sql: str, *arguments: object) -> None:
        async with translated_errors(), self._pool.acquire() as conn:
            await conn.execute(sql, *arguments)


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
