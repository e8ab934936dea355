"""Publish committed effects (the transactional outbox's second half).

Right after a commit, the worker publishes that commit's effects from memory
and marks them published. Whatever a crash left behind is found by a sweep
of the outbox for effects older than a grace period, run by every worker, so
whoever takes over publishes them. Effects are thus delivered at least once,
each with its stable id for consumers to de-duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from opentelemetry.context import Context

from .._errors import PachydermError
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


def _current_trace(_: OutboxEntry) -> None:
    return None


def _measure_lag(entries: Sequence[OutboxEntry], source: Labels) -> None:
    telemetry = instruments()
    if telemetry.metering:
        now = datetime.now(UTC)
        for entry in entries:
            telemetry.outbox_lag.record((now - entry.created_at).total_seconds(), source)


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
        self, entries: Sequence[OutboxEntry], *, parent_of: ParentOf = _current_trace
    ) -> None:
        """Publish ``entries`` (confirmed, pipelined), then mark them published.

        Each publish is traced as a continuation of ``parent_of(entry)``.
        """
        if not entries:
            return
        await asyncio.gather(*(self._publish_one(entry, parent_of(entry)) for entry in entries))
        await self.store.mark_published([entry.effect_id for entry in entries])

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
            await self.publish(entries, parent_of=parent_of)
        except PachydermError as error:
            log.warning("effects left in the outbox for the sweep: %s", error)
        else:
            _measure_lag(entries, _AFTER_COMMIT)

    async def sweep_once(self) -> int:
        """Publish effects that waited longer than the grace period; returns how many."""
        published = 0
        while entries := await self.store.pending_effects(self.batch_size, self.grace):
            await self.publish(entries)
            _measure_lag(entries, _SWEPT)
            published += len(entries)
        return published

    async def sweep_forever(self) -> None:
        while True:
            try:
                if swept := await self.sweep_once():
                    log.info("published %d effects left in the outbox", swept)
            except PachydermError as error:
                log.warning("outbox sweep failed, retrying: %s", error)
            await asyncio.sleep(self.sweep_interval)
