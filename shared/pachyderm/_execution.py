"""Running one command against one entity's state: pure, no I/O.

The worker and the testing kit both go through :func:`execute`, so what a
test asserts is what production does. Both pass the app's look-up of entity
types by name (:data:`EntityTypes`): a ``Send`` is encoded with its target's
commands, and an entity type does not know the app it belongs to.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from . import _codec
from ._decision import NEW_STATE
from ._effects import Effect, Send
from ._entity import AnyEffect, Reject
from ._entity_type import EntityType
from ._errors import HandlerError, PachydermError
from ._plain import plain
from ._reference import Ref
from ._scheduling import TimerSpec, timer_write
from ._timers import Cancel, FiredTimer, Schedule, fired_by
from .store import Change, NewEffect, TimerWrite

DEFAULT_SNAPSHOT_EVERY = 100

EntityTypes = Callable[[str], EntityType[Any]]
"""The registered entity type of a name (:meth:`App.entity_type`), else UnknownNameError."""


@dataclass(frozen=True, slots=True)
class Execution:
    """The result of one command: the new state and what must be committed.

    ``change`` records the decision: events and effects, or just the command
    id with its reply (a rejection, or a command that changed nothing).
    """

    state: Any
    version: int
    change: Change
    events: tuple[Any, ...] = ()
    effects: tuple[AnyEffect, ...] = ()
    reply: Any = None
    rejection: Reject | None = None


def effect_id(entity: uuid.UUID, command_id: str, index: int) -> uuid.UUID:
    """The stable id of a command's ``index``-th effect: the same on every retry."""
    return uuid.uuid5(entity, f"{command_id}/{index}")


def encode_effect(
    entity_type: EntityType[Any],
    effect: Effect | Send,
    effect_id: uuid.UUID,
    *,
    entity_types: EntityTypes,
) -> NewEffect:
    """An effect as an outbox row: external handlers and other entities alike.

    A ``Send``'s command is encoded by its target type, found in ``entity_types``.
    """
    if isinstance(effect, Effect):
        return NewEffect(
            effect_id, f"effect.{effect.handler}", _codec.encode(plain(effect.payload))
        )
    try:
        target = entity_types(effect.to.type)
        name, data = target.commands.dump(effect.command)
    except PachydermError as error:
        raise HandlerError(f"{entity_type.name} sent an invalid command: {error}") from error
    version = target.commands.schema_version(name)
    return command_effect(
        effect_id, Ref(target.name, effect.to.id), name, data, schema_version=version
    )


def command_effect(
    effect_id: uuid.UUID,
    to: Ref,
    name: str,
    data: Any,
    *,
    timer: FiredTimer | None = None,
    schema_version: int = 1,
) -> NewEffect:
    """The outbox row of a command for the entity ``to`` (a ``Send``, or a timer's
    command for another entity, which carries the timer that fired it), written with
    ``schema_version`` of its type (kept only when not 1)."""
    body: dict[str, Any] = {
        "entity_type": to.type,
        "entity_id": str(to.id),
        "command": name,
        "data": data,
    }
    if schema_version != 1:
        body["schema_version"] = schema_version
    if timer is not None:
        body["timer"] = {
            "key": timer.key,
            "due": timer.due.isoformat(),
            "missed": timer.missed,
            "every_us": timer.every // timedelta(microseconds=1) if timer.every else None,
        }
    return NewEffect(effect_id, f"command.{to.type}", _codec.encode(body))


def encode_schedule(
    entity_type: EntityType[Any], effect: Schedule, *, entity_types: EntityTypes
) -> TimerSpec:
    """A ``Schedule``'s command, encoded by its target type (this entity's, or ``to``'s)."""
    try:
        target = entity_types(effect.to.type) if effect.to else entity_type
        name, data = target.commands.dump(effect.command)
    except PachydermError as error:
        raise HandlerError(f"{entity_type.name} scheduled an invalid command: {error}") from error
    return TimerSpec(
        name,
        data,
        effect.to,
        effect.every,
        effect.missed,
        effect.limit,
        schema_version=target.commands.schema_version(name),
    )


def _effects(
    entity_type: EntityType[Any],
    ref: Ref,
    effects: tuple[AnyEffect, ...],
    *,
    command_id: str,
    entity_types: EntityTypes,
    now: datetime,
) -> tuple[list[NewEffect], list[TimerWrite]]:
    """A decision's effects as outbox rows and timer writes, in order. Each is
    numbered among all the effects, so that adding a timer moves no effect's id."""
    outbox: list[NewEffect] = []
    timers: list[TimerWrite] = []
    for index, effect in enumerate(effects):
        stable_id = effect_id(ref.id, command_id, index)
        if isinstance(effect, Schedule | Cancel):
            spec = (
                encode_schedule(entity_type, effect, entity_types=entity_types)
                if isinstance(effect, Schedule)
                else None
            )
            timers.append(timer_write(effect, spec, now=now, scheduled_as=str(stable_id)))
        else:
            outbox.append(encode_effect(entity_type, effect, stable_id, entity_types=entity_types))
    return outbox, timers


def execute(
    entity_type: EntityType[Any],
    ref: Ref,
    state: Any,
    version: int,
    command: Any,
    *,
    command_id: str,
    entity_types: EntityTypes,
    snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
    now: datetime | None = None,
    timer: FiredTimer | None = None,
    partition: int = 0,
    resnapshot: bool = False,
) -> Execution:
    """Decide ``command`` on ``state`` (at ``version``) and prepare its commit.

    Every decision is committed, a rejection or a no-op too: the commit checks
    that it was made on the latest state, and records the command id with its
    reply, so a retried command gets the same answer whatever happened since.

    ``now`` is when the decision is made (timers scheduled ``after`` count from
    it); ``timer``, the timer that fired the command, if one did; ``partition``,
    the partition it came from (its events' place in the log, its timers' owner);
    ``resnapshot``: the stored snapshot is not trusted (another version of the state
    or fold took it), so snapshot now if there are events, whatever ``snapshot_every``.
    """
    with fired_by(timer):
        decision = entity_type.decide(ref, state, command)
    if decision.rejection is not None:
        reply = stored_reply(rejection=decision.rejection)
        change = Change(ref, version, command_id, reply=reply, partition=partition)
        return Execution(state, version, change, rejection=decision.rejection)
    new_state = entity_type.evolve(state, decision.events)
    new_version = version + len(decision.events)
    reply = (
        entity_type.dump_state(new_state) if decision.reply is NEW_STATE else plain(decision.reply)
    )
    snapshot = None
    crossed = snapshot_every and new_version // snapshot_every > version // snapshot_every
    # An ending change snapshots its final state (none at version 0: that is ``init``).
    final = decision.end and new_version > 0
    if crossed or final or (resnapshot and new_version > version):
        snapshot = entity_type.snapshot(new_version, new_state)
    outbox, timers = _effects(
        entity_type,
        ref,
        decision.effects,
        command_id=command_id,
        entity_types=entity_types,
        now=now or datetime.now(UTC),
    )
    change = Change(
        ref,
        version,
        command_id,
        [entity_type.encode_event(event) for event in decision.events],
        stored_reply(reply=reply),
        outbox,
        snapshot,
        timers=timers,
        partition=partition,
        ends=decision.end,
    )
    return Execution(new_state, new_version, change, decision.events, decision.effects, reply)


def stored_reply(*, reply: Any = None, rejection: Reject | None = None) -> bytes:
    """What the store keeps with a command id: its reply, or its rejection."""
    if rejection is not None:
        return _codec.encode({"rejected": rejection.reason, "detail": plain(rejection.detail)})
    return _codec.encode({"reply": reply})


def read_stored_reply(data: bytes) -> tuple[Any, Reject | None]:
    """``(reply, rejection)`` from what :func:`stored_reply` wrote."""
    stored = _codec.decode(data)
    if "rejected" in stored:
        return None, Reject(stored["rejected"], stored.get("detail"))
    return stored.get("reply"), None
