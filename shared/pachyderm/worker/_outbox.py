"""Publish committed effects (the transactional outbox's second half).

Right after a commit, the worker publishes that commit's effects from memory
and marks them published. Whatever a crash left behind is found by a sweep
of the outbox for effects older than a grace period, run by every worker, so
whoever takes over publishes them. Effects are thus delivered at least once,
each with its stable id for consumers to de-duplicate.

Each effect stands alone: it is marked published as soon as its own publish
is confirmed, and one whose publish fails is postponed with a back-off of its
own (doubling, capped), so the sweep reaches the effects behind it meanwhile.
An effect that no handler's queue is bound for yet is not a failure: the
broker keeps it until one is (see :meth:`Transport.route_waiting_effects`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from .._errors import PachydermError, TransportUnavailableError
from .._hooks import BatchHooks, WorkerHooks
from .._wire import COMMAND, effect_message
from ..store import Change, EventStore, OutboxEntry
from ..transport import Transport

log = logging.getLogger("pachyderm.effects")

AFTER_COMMIT, SWEPT = "commit", "sweep"

# The first new try of an effect whose publish failed waits this long, each
# later one twice as long as the one before, up to _MAX_BACKOFF: a broker that
# refuses one effect for good costs one publish per five minutes, not a loop.
_FIRST_BACKOFF = 1.0
_MAX_BACKOFF = 300.0

Failure = tuple[OutboxEntry, PachydermError]


def backoff(attempts: int) -> float:
    """Seconds until the next try of an effect whose publish failed ``attempts + 1`` times."""
    return min(_FIRST_BACKOFF * 2.0 ** min(attempts, 32), _MAX_BACKOFF)


def outbox_entries(changes: Sequence[Change]) -> list[OutboxEntry]:
    """The outbox rows these committed changes wrote, rebuilt from memory."""
    now = datetime.now(UTC)
    return [
        OutboxEntry(
            effect.effect_id,
            effect.destination,
            effect.payload,
            change.ref.id,
            change.command_id,
            now,
            trace=change.trace,
        )
        for change in changes
        for effect in change.effects
    ]


class EffectPublisher:
    """Publishes outbox entries with publisher confirms, then marks them published."""

    def __init__(
        self,
        store: EventStore,
        transport: Transport,
        *,
        grace: float = 5.0,
        sweep_interval: float = 2.0,
        batch_size: int = 500,
        hooks: WorkerHooks | None = None,
    ) -> None:
        self.store = store
        self.transport = transport
        self.grace = grace
        self.sweep_interval = sweep_interval
        self.batch_size = batch_size
        self.hooks = hooks or WorkerHooks()

    async def publish(
        self,
        entries: Sequence[OutboxEntry],
        *,
        batch: BatchHooks | None = None,
        source: str = SWEPT,
    ) -> list[Failure]:
        """Publish each of ``entries`` (confirmed, pipelined) and mark those that went out
        published; returns the others with what went wrong, for the caller to decide.

        ``batch`` is the batch that committed them (None: they come from the outbox).
        """
        if not entries:
            return []
        outcomes = await asyncio.gather(
            *(self._publish_one(entry, batch) for entry in entries),
            return_exceptions=True,
        )
        sent: list[OutboxEntry] = []
        failed: list[Failure] = []
        for entry, outcome in zip(entries, outcomes, strict=True):
            if isinstance(outcome, PachydermError):
                failed.append((entry, outcome))
                self.hooks.failed(entry, outcome)
            elif isinstance(outcome, BaseException):
                raise outcome  # a bug, or cancellation: not the effect's fault
            else:
                sent.append(entry)
        if sent:
            await self.store.mark_published([entry.effect_id for entry in sent])
            self.hooks.published(sent, source)
        return failed

    async def _publish_one(self, entry: OutboxEntry, batch: BatchHooks | None) -> None:
        kind, message = effect_message(entry)
        topology = self.transport.topology
        if kind == COMMAND:
            exchange, send = topology.commands_exchange, self.transport.publish_command
        else:
            exchange, send = topology.effects_exchange, self.transport.publish_effect
        with self.hooks.publishing(exchange, message, entry, batch) as hooked:
            await send(hooked)

    async def publish_committed(
        self, changes: Sequence[Change], *, batch: BatchHooks | None = None
    ) -> None:
        """The fast path after a commit; a failure leaves the effects to the sweep.

        ``batch`` is the batch that committed them: their command's trace, say.
        """
        entries = outbox_entries(changes)
        try:
            failed = await self.publish(entries, batch=batch, source=AFTER_COMMIT)
        except PachydermError as error:  # marking them published failed
            log.warning("effects left in the outbox for the sweep: %s", error)
            return
        if failed:
            log.warning(
                "%d effects left in the outbox for the sweep: %s", len(failed), failed[0][1]
            )

    async def sweep_once(self) -> int:
        """Publish effects that waited longer than the grace period; returns how many.

        An effect whose publish fails is postponed by :func:`backoff` and the
        sweep goes on with the rest. While the broker cannot be reached, it
        stops and raises :class:`TransportUnavailableError` instead: that is
        no effect's fault, so none is postponed for it.
        """
        published = 0
        while entries := await self.store.pending_effects(self.batch_size, self.grace):
            failed = await self.publish(entries)
            refused = [f for f in failed if not isinstance(f[1], TransportUnavailableError)]
            await self._postpone(refused)
            published += len(entries) - len(failed)
            if len(refused) < len(failed):
                unavailable = next(e for _, e in failed if isinstance(e, TransportUnavailableError))
                raise unavailable
        return published

    async def _postpone(self, failed: Sequence[Failure]) -> None:
        if not failed:
            return
        for entry, error in failed:
            log.warning(
                "effect %s to %s failed to publish (attempt %d), next try in %.0f s: %s",
                entry.effect_id,
                entry.destination,
                entry.attempts + 1,
                backoff(entry.attempts),
                error,
            )
        await self.store.postpone_effects(
            {entry.effect_id: backoff(entry.attempts) for entry, _ in failed}
        )

    async def sweep_forever(self) -> None:
        while True:
            try:
                if swept := await self.sweep_once():
                    log.info("published %d effects left in the outbox", swept)
            except PachydermError as error:
                log.warning("outbox sweep failed, retrying: %s", error)
            await asyncio.sleep(self.sweep_interval)
