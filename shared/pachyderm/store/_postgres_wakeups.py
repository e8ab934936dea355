"""Log wake-ups through PostgreSQL's LISTEN/NOTIFY, one channel per namespace.

The payload lists the partitions whose logs grew, comma-separated (``*``: all).

The NOTIFY is sent *after* a commit, in a transaction of its own, never inside
the commit: PostgreSQL serialises the commits of transactions that notify (a
database-wide lock held through the commit record's flush), which would undo
group commit. The notifier sends one NOTIFY per round trip, however many
commits landed meanwhile, with ``synchronous_commit`` off for it alone (a lost
wake-up costs a poll, not data). It waits a moment (:data:`COALESCE`) after the
first commit before sending: the worker that committed replies first (sent at
once, the NOTIFY's round trip would run on every reply's latency), and a busy
worker sends one NOTIFY for the commits of those milliseconds instead of one
per commit (bench/results.md, "Where a sequential call's time goes"). A
listener holds one pooled connection; when it is lost, readers fall back to
polling until it is back, and every partition counts as changed then (wake-ups
may have been missed meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Iterable

import asyncpg

from ._log_wakeups import LocalWakeups

log = logging.getLogger("pachyderm.store")

_MAX_PAYLOAD = 7000  # PostgreSQL refuses payloads of 8000 bytes or more
_RETRY = (0.5, 30.0)  # first and largest pause before listening again
_CHECK_EVERY = 15.0  # seconds between checks that the listening connection is alive
_LOST = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
COALESCE = 0.002
"""Seconds a wake-up waits for more commits to join it: readers learn of a commit
that much later, far below their polling interval."""


def channel(schema: str) -> str:
    """The namespace's channel: readable when it fits PostgreSQL's 63-byte names."""
    name = f"pachyderm_log.{schema}"
    if len(name) <= 63:
        return name
    return "pachyderm_log." + hashlib.sha256(schema.encode()).hexdigest()[:40]


def payload(partitions: Iterable[int]) -> str:
    text = ",".join(str(p) for p in sorted(partitions))
    return text if len(text) <= _MAX_PAYLOAD else "*"


def partitions_in(text: str) -> list[int] | None:
    """The partitions a payload names; None for all (``*`` or anything unreadable)."""
    try:
        return [int(part) for part in text.split(",")] if text != "*" else None
    except ValueError:
        return None


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class LogNotifier:
    """Sends the wake-ups of a store's commits, coalesced, from a task of its own."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self._pool = pool
        self._channel = _literal(channel(schema))
        self._pending: set[int] = set()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def committed(self, partitions: Iterable[int]) -> None:
        """Queue a wake-up for ``partitions``; returns at once."""
        self._pending.update(partitions)
        if not self._pending:
            return
        self._ready.set()
        if self._task is None:
            self._task = asyncio.create_task(self._send(), name="pachyderm log notifier")

    async def _send(self) -> None:
        while True:
            await self._ready.wait()
            await asyncio.sleep(COALESCE)
            self._ready.clear()
            partitions, self._pending = self._pending, set()
            # One simple-protocol round trip: the setting is for this transaction only.
            script = (
                "BEGIN; SET LOCAL synchronous_commit TO off; "
                f"SELECT pg_notify({self._channel}, {_literal(payload(partitions))}); COMMIT"
            )
            try:
                async with self._pool.acquire() as connection:
                    await connection.execute(script)
            except _LOST as error:
                # Readers poll meanwhile; the next commit sends again.
                log.debug("log wake-up not sent: %s", error)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


class LogListener(LocalWakeups):
    """:class:`~pachyderm.store.LogWakeups` fed by the namespace's channel."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        super().__init__()
        self._pool = pool
        self._channel = channel(schema)
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        """Set while the listening connection is up (for tests and health)."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="pachyderm log listener")

    async def _listen(self) -> None:
        pause = _RETRY[0]
        while True:
            try:
                await self._listen_once()
            except _LOST as error:
                log.warning("log wake-ups lost (%s); polling until back", error)
            if self.listening.is_set():
                pause = _RETRY[0]  # it was up: the outage starts now
            self.listening.clear()
            self.everything_changed()
            await asyncio.sleep(pause)
            pause = min(pause * 2, _RETRY[1])

    async def _listen_once(self) -> None:
        async with self._pool.acquire() as connection:
            lost = asyncio.Event()
            connection.add_termination_listener(lambda _connection: lost.set())
            await connection.add_listener(self._channel, self._notified)
            try:
                self.listening.set()
                self.everything_changed()  # whatever committed before we listened
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_CHECK_EVERY):
                            await lost.wait()
                    if not lost.is_set():
                        await connection.execute("SELECT 1")  # raises when it is gone
            finally:
                if not connection.is_closed():
                    # The pool keeps sessions as they are: leave no LISTEN behind.
                    await connection.remove_listener(self._channel, self._notified)

    def _notified(self, _connection: object, _pid: int, _channel: str, text: object) -> None:
        partitions = partitions_in(text) if isinstance(text, str) else None
        if partitions is None:
            self.everything_changed()
        else:
            self.committed(partitions)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.listening.clear()
