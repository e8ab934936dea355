"""Due timers as requests for the engine, and what a fire adds to its change.

A fire is an ordinary command to the entity that scheduled the timer, with a
deterministic command id, committed together with the timer's own write
(consumed, or moved to its next tick) and on condition that the timer is still
pending as fired (``Change.fires``): cancelled, replaced or already fired, it
writes nothing. A timer whose command goes to another entity fires as a change
of its owner that puts that command in the outbox (the timer and its owner live
in one partition; the target may not); one whose ticks are dropped fires as a
change that only moves the timer on.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from typing import Any

from .._app import App
from .._errors import PachydermError
from .._execution import Execution, command_effect, effect_id, stored_reply
from .._reference import Ref
from .._scheduling import Firing, TimerSpec, plan_fire
from .._wire import COMMAND, TIMER, Request
from ..store import Change, StoredTimer

log = logging.getLogger("pachyderm.timers")


def with_timers(request: Request, change: Change) -> Change:
    """``change`` with what its request's fire adds (nothing for any other request)."""
    firing = request.firing
    if firing is None:
        return change
    effects = (*change.effects, firing.forward) if firing.forward else change.effects
    timers = (*firing.writes, *change.timers)
    return replace(change, fires=firing.check, timers=timers, effects=effects)


def fire_elsewhere(
    request: Request, ref: Ref, state: Any, version: int, partition: int
) -> Execution:
    """The owner's side of a fire that runs no ``handle`` here: no event, no reply."""
    change = Change(ref, version, request.command_id, reply=stored_reply(), partition=partition)
    return Execution(state, version, change)


def fire_request(app: App, timer: StoredTimer, now: datetime) -> Request:
    """The request that fires ``timer`` at ``now``. Raises :class:`PachydermError` for a
    timer this code cannot fire (an unknown type or command, an unreadable payload)."""
    spec = TimerSpec.decode(timer.payload)
    plan = plan_fire(timer, spec, now)
    owner_type = app.entity_type(timer.entity_type)
    owner = Ref(owner_type.name, timer.entity_id)
    writes = plan.writes(timer)
    if plan.fired is None:  # its ticks are dropped: only the timer moves on
        firing = Firing(plan.check, writes)
        return Request(owner, owner_type, None, plan.command_id, TIMER, firing=firing)
    if spec.to is not None and spec.to != owner:
        target = app.entity_type(spec.to.type)
        # Refused here, not at the target.
        target.commands.load_one(spec.command, spec.data, spec.schema_version)
        forward = command_effect(
            effect_id(owner.id, plan.command_id, 0),
            Ref(target.name, spec.to.id),
            spec.command,
            spec.data,
            timer=plan.fired,
            schema_version=spec.schema_version,
        )
        firing = Firing(plan.check, writes, forward)
        return Request(owner, owner_type, None, plan.command_id, TIMER, firing=firing)
    command = owner_type.commands.load_one(spec.command, spec.data, spec.schema_version)
    firing = Firing(plan.check, writes)
    return Request(
        owner, owner_type, command, plan.command_id, COMMAND, timer=plan.fired, firing=firing
    )


def fire_requests(
    app: App, timers: list[StoredTimer], now: datetime
) -> tuple[list[tuple[StoredTimer, Request]], list[tuple[StoredTimer, PachydermError]]]:
    """Requests for the due ``timers``, one per entity (an entity's next timer fires in
    the next round, on the state this one leaves); and those that cannot fire."""
    requests: list[tuple[StoredTimer, Request]] = []
    broken: list[tuple[StoredTimer, PachydermError]] = []
    seen: set[Any] = set()
    for timer in timers:
        if timer.entity_id in seen:
            continue
        seen.add(timer.entity_id)
        try:
            requests.append((timer, fire_request(app, timer, now)))
        except PachydermError as error:
            broken.append((timer, error))
        except (ArithmeticError, ValueError) as error:  # a grid past year 9999, say
            broken.append((timer, PachydermError(f"cannot fire: {error!r}")))
    return requests, broken
