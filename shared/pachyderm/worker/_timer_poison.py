"""Poison timers: a fire that takes its worker down, hangs it or keeps failing is held
after its attempts instead of tried for ever (and across the fleet, worker after worker).

A fire runs in the worker's process (the timers' fast path). One that may be a
poison's is *risky*: its timer failed before (``attempts``, counted durably), or
fell due before this owner began firing the partition (the former owner may have
died firing it: an attempt never counted, as a broker's first delivery is not).
Risky fires go in small groups: those never counted, up to :data:`GROUP`
together; those counted before, alone; so a poison makes suspects of its group
only. A call with a risky fire in it is decided in a forked child first where the
worker isolates (as redelivered commands are: see :mod:`._quarantine`): a poison
ends the child, not the worker, so a poison timer costs at most the worker that
fired it first, when nothing made it suspect yet. A call whose child died, or
that the watchdog interrupted (:class:`~._isolation.HandlerDiedError`: nothing
committed), counts an attempt against every fire of its call it may be blamed on
(see below), risky then, each alone next, and each next try waits the back-off (a crash loop
is spaced out, not a storm). Only a dead child's call counts: a healthy timer
beside a poison, or on a worker killed meanwhile, is not counted in vain (it
was, when every risky fire was counted before it ran, and a healthy timer could
be held). Where the worker does not isolate, a risky fire is counted before it
runs (one more attempt, the back-off, one statement for its group), so that one
that takes the worker down is on record for the next owner. A child that dies
names the fire it died deciding (:mod:`._isolation`), blamed here by its entity (a
call fires an entity's first timer only): only that fire is counted; the others of
its call go again in the next group, uncounted.

Once the attempts made reach ``max_attempts``, the timer is *held*: its next try
is put off for a century (``EventStore.hold_timers``; its ``attempts`` say why),
which is logged and counted
(``pachyderm.quarantined``, policy ``hold``); the entity's other timers and its
commands go on. An operator releases it (``pachyderm timers release``): its
attempts start over and it fires at once. A held timer is pending like any: a
cancel or a replacement applies to it (and a replacement's attempts start at 0).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from .._hooks import WorkerHooks
from .._wire import Request
from ..store import EventStore, StoredTimer
from ._isolation import HandlerDiedError
from ._outbox import backoff

log = logging.getLogger("pachyderm.timers")

GROUP = 16  # risky fires never counted before, fired (and counted) together at most
HOLD_POLICY = "hold"  # the policy label of a held timer on ``pachyderm.quarantined``

Fire = tuple[StoredTimer, Request]


class TimerPoison:
    """Which of a partition's due fires are risky, counted first or held (see above)."""

    def __init__(
        self,
        partition: int,
        store: EventStore,
        hooks: WorkerHooks,
        *,
        max_attempts: int,
        since: datetime,
    ) -> None:
        self.partition = partition
        self.store = store
        self.hooks = hooks
        self.max_attempts = max_attempts
        self.since = since  # when this owner began firing the partition

    def made(self, timer: StoredTimer) -> int:
        """The attempts made at ``timer``'s fire: those counted, and the former owner's
        (by its due time, which a back-off does not move)."""
        return timer.attempts + (timer.due_at < self.since)

    def split(self, fires: Sequence[Fire]) -> tuple[list[Fire], list[Fire], list[Fire]]:
        """``(run, exhausted, later)``: the fires to run now (the safe ones and one group
        of risky ones, to count first: :meth:`count`), those to hold, and risky ones
        left for a later call (they stay due)."""
        safe = [fire for fire in fires if not self.made(fire[0])]
        risky = [fire for fire in fires if self.made(fire[0])]
        exhausted = [fire for fire in risky if self.made(fire[0]) >= self.max_attempts]
        left = [fire for fire in risky if self.made(fire[0]) < self.max_attempts]
        counted = [fire for fire in left if fire[0].attempts]
        group = counted[:1] or left[:GROUP]
        chosen = {_key(timer) for timer, _ in group}
        return safe + group, exhausted, [fire for fire in left if _key(fire[0]) not in chosen]

    def risky(self, timer: StoredTimer) -> bool:
        return self.made(timer) > 0

    async def count(self, fires: Sequence[Fire]) -> list[Fire]:
        """Count an attempt of each risky fire of ``fires`` before it runs (see above);
        those to run: the others are held (their attempts, as counted now, show that
        another owner tried them since they were read: owners overlap while a partition
        moves) or gone (fired or cancelled meanwhile)."""
        delays = {_key(timer): backoff(timer.attempts) for timer, _ in fires if self.risky(timer)}
        counted = await self.store.postpone_timers(delays)
        exhausted = [
            (timer, request)
            for timer, request in fires
            if _key(timer) in counted
            and self.made(replace(timer, attempts=counted[_key(timer)] - 1)) >= self.max_attempts
        ]
        await self.hold(exhausted)
        held = {_key(timer) for timer, _ in exhausted}
        return [
            (timer, request)
            for timer, request in fires
            if _key(timer) not in held and (_key(timer) in counted or not self.risky(timer))
        ]

    async def died(self, fires: Sequence[Fire], error: HandlerDiedError, *, counted: bool) -> None:
        """A call of ``fires`` killed its child or was interrupted: count an attempt of
        each not counted yet (``counted``: the risky ones were, before they ran) that
        the death is blamed on (the entity its child died deciding, if named: the
        others go again uncounted); those decided in a child wait the back-off before
        their next try, as counted ones do."""
        log.warning("partition %d: %s; its timers count an attempt", self.partition, error)
        delays = {
            _key(timer): 0.0 if counted else backoff(timer.attempts)
            for timer, _ in fires
            if not (counted and self.risky(timer)) and error.blames(timer.entity_id)
        }
        await self.store.postpone_timers(delays)

    async def hold(self, fires: Sequence[Fire]) -> None:
        """Hold these exhausted timers until an operator releases them."""
        if not fires:
            return
        await self.store.hold_timers([_key(timer) for timer, _ in fires])
        for timer, _ in fires:
            log.error(
                "partition %d: timer %r of %s %s is held after %d attempts (a poison?);"
                " release it with: pachyderm timers release %s %s %s",
                self.partition,
                timer.key,
                timer.entity_type,
                timer.entity_id,
                self.made(timer),
                timer.entity_type,
                timer.entity_id,
                timer.key,
                extra={
                    "event": "timer.held",
                    "entity_type": timer.entity_type,
                    "entity_id": str(timer.entity_id),
                    "timer_key": timer.key,
                    "attempts": self.made(timer),
                },
            )
            self.hooks.quarantined(timer.entity_type, HOLD_POLICY)


def _key(timer: StoredTimer) -> tuple[uuid.UUID, str]:
    return timer.entity_id, timer.key
