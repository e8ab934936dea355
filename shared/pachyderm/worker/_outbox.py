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
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from opentelemetry.context import Context

from .._errors import PachydermError, TransportUnavailableError
from .._wire import COMMAND, effect_message
from ..store import Change, EventStore, OutboxEntry
from ..telemetry._instruments import Labels
from ..telemetry._messaging import publishing
from ..telemetry._telemetry import instruments
from ..transport import Transport

log = logging.getLogger("pachyderm.effects")

ParentOf = Callable[[OutboxEntry], Context | None]
"""The trace an effect continues (None: the current one)."""

_AFTER_COMMIT: Labels = {"source": "commit"}
_SWEPT: Labels = {"source": "sweep"}

# The first new try of an effect whose publish failed waits this long, each
# later one twice as long as the one before, up to _MAX_BACKOFF: a broker that
# refuses one effect for good costs one publish per five minutes, not a loop.
_FIRST_BACKOFF = 1.0
_MAX_BACKOFF = 300.0

Failure = tuple[OutboxEntry, PachydermError]


def backoff(attempts: int) -> float:
    """Seconds until the next try of an effect whose publish failed ``attempts + 1`` times."""
    return min(_FIRST_BACKOFF * 2.0 ** min(attempts, 32), _MAX_BACKOFF)


def _current_trace(_: OutboxEntry) -> None:
    return None


def _measure_lag(entries: Sequence[OutboxEntry], source: Labels) -> None:
    telemetry = instruments()
    if telemetry.metering:
        now = datetime.now(UTC)
        for entry in entries:
            telemetry.outbox_lag.record((now - entry.created_at).total_seconds(), source)


def _count_failures(failed: Sequence[Failure]) -> None:
    telemetry = instruments()
    if telemetry.metering:
        for _, error in failed:
            telemetry.outbox_failures.add(1, {"error": type(error).__name__})


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
    ) -> None:
        self.store = store
        self.transport = transport
        self.grace = grace
        self.sweep_interval = sweep_interval
        self.batch_size = batch_size

    async def publish(
        self,
        entries: Sequence[OutboxEntry],
        *,
        parent_of: ParentOf = _current_trace,
        source: Labels = _SWEPT,
    ) -> list[Failure]:
        """Publish each of ``entries`` (confirmed, pipelined) and mark those that went out
        published; returns the others with what went wrong, for the caller to decide.

        Each publish is traced as a continuation of ``parent_of(entry)``.
        """
        if not entries:
            return []
        outcomes = await asyncio.gather(
            *(self._publish_one(entry, parent_of(entry)) for entry in entries),
            return_exceptions=True,
        )
        sent: list[OutboxEntry] = []
        failed: list[Failure] = []
        for entry, outcome in zip(entries, outcomes, strict=True):
            if isinstance(outcome, PachydermError):
                failed.append((entry, outcome))
            elif isinstance(outcome, BaseException):
                raise outcome  # a bug, or cancellation: not the effect's fault
            else:
                sent.append(entry)
        if sent:
            await self.store.mark_published([entry.effect_id for entry in sent])
            _measure_lag(sent, source)
        _count_failures(failed)
        return failed

    async def _publish_one(self, entry: OutboxEntry, parent: Context | None) -> None:
        kind, message = effect_message(entry)
        topology = self.transport.topology
        if kind == COMMAND:
            exchange, send = topology.commands_exchange, self.transport.publish_command
        else:
            exchange, send = topology.effects_exchange, self.transport.publish_effect
        with publishing(exchange, message, parent=parent) as traced:
            await send(traced)

    async def publish_committed(
        self, changes: Sequence[Change], *, parent_of: ParentOf = _current_trace
    ) -> None:
        """The fast path after a commit; a failure leaves the effects to the sweep.

        ``parent_of`` says which trace each effect continues: its command's.
        """
        entries = outbox_entries(changes)
        try:
            failed = await self.publish(entries, parent_of=parent_of, source=_AFTER_COMMIT)
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
