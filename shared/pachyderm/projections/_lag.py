"""How far behind its partition's log each cursor is, and the gauges that report it.

Lag is in events (the log's head minus the cursor) and in seconds (since the
oldest event not yet applied was recorded: 0 when there is none).
:class:`LagGauges` measures this process's cursors every few seconds and
reports the last measure when metrics are read, so a scrape runs no query.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from ..store import EventStore
from ._cursors import Cursor, CursorStore

log = logging.getLogger("pachyderm.projections")


@dataclass(frozen=True, slots=True)
class Lag:
    """A cursor, and how far behind its partition's log it is."""

    cursor: Cursor
    head: int
    seconds: float

    @property
    def events(self) -> int:
        return max(self.head - self.cursor.position, 0)

    def as_json(self) -> dict[str, object]:
        return {
            "projection": self.cursor.projection,
            "partition": self.cursor.partition,
            "position": self.cursor.position,
            "head": self.head,
            "lag_events": self.events,
            "lag_seconds": round(self.seconds, 3),
            "paused": self.cursor.paused,
            "rebuilding": self.cursor.rebuilding,
        }


async def lags(store: EventStore, cursors: CursorStore, name: str | None = None) -> list[Lag]:
    """The lag of each cursor of projection ``name`` (else of every projection)."""
    heads = await store.log_heads()
    now = datetime.now(UTC)
    lags = []
    for cursor in await cursors.cursors(name):
        head = heads.get(cursor.partition, 0)
        waiting = (
            await store.read_log(cursor.partition, cursor.position, 1)
            if head > cursor.position
            else []
        )
        seconds = (now - waiting[0].event.recorded_at).total_seconds() if waiting else 0.0
        lags.append(Lag(cursor, head, max(seconds, 0.0)))
    return lags


class LagGauges:
    """``pachyderm.projection.lag`` ({event}) and ``pachyderm.projection.lag_seconds`` (s),
    per projection and partition, for the cursors ``mine`` picks (this process's)."""

    def __init__(
        self,
        store: EventStore,
        cursors: CursorStore,
        mine: Callable[[Cursor], bool],
        *,
        every: float = 2.0,
    ) -> None:
        self._store = store
        self._cursors = cursors
        self._mine = mine
        self._every = every
        self._last: list[Lag] = []

    def register(self, meter: Meter) -> None:
        meter.create_observable_gauge(
            "pachyderm.projection.lag",
            callbacks=[self._observe(lambda lag: lag.events)],
            unit="{event}",
            description="Events of a partition's log a projection has not applied yet",
        )
        meter.create_observable_gauge(
            "pachyderm.projection.lag_seconds",
            callbacks=[self._observe(lambda lag: lag.seconds)],
            unit="s",
            description="Age of the oldest event a projection has not applied yet",
        )

    def _observe(
        self, value: Callable[[Lag], float]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(
                    value(lag),
                    {"projection": lag.cursor.projection, "partition": lag.cursor.partition},
                )
                for lag in self._last
            ]

        return observe

    async def run(self) -> None:
        """Measure every ``every`` seconds until cancelled."""
        while True:
            try:
                self._last = [
                    lag for lag in await lags(self._store, self._cursors) if self._mine(lag.cursor)
                ]
            except Exception as error:  # a database outage: keep the last measure
                log.warning("projection lag not measured: %s", error)
            await asyncio.sleep(self._every)
