"""``pachyderm inspect``: an entity's history and state, for a person or a machine."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .. import _codec
from .._entity_type import EntityType
from .._errors import InvalidEntityIdError
from .._loading import load_app
from .._reference import Ref
from .._scheduling import describe_timer
from .._settings import Settings
from ..store import ENDED, ERASED, LoadedEntity, RecordedEvent
from ._store import settings_store


def entity_ref(arguments: argparse.Namespace) -> Ref:
    """The entity that TYPE ID [--key] name (an id that is no UUID hints at --key)."""
    if arguments.key:
        return Ref.from_key(arguments.type, arguments.id)
    try:
        return Ref.parse(arguments.type, arguments.id)
    except InvalidEntityIdError as error:
        raise InvalidEntityIdError(f"{error} (a natural key? add --key)") from None


async def inspect_command(settings: Settings, arguments: argparse.Namespace) -> None:
    ref = entity_ref(arguments)
    entity_type = load_app(settings.app).entity_type(ref.type) if settings.app else None
    async with settings_store(settings) as store:
        loaded = await store.load(ref, use_snapshot=False)
        # An ended entity's history may be pruned: its final snapshot is its state.
        final = await store.load(ref) if loaded.ended == ENDED else loaded
        timers = [describe_timer(timer) for timer in await store.entity_timers(ref.id)]
    events = [e for e in loaded.events if e.version >= arguments.from_version]
    state = None
    if entity_type is not None and loaded.ended != ERASED:
        state = entity_type.dump_state(entity_type.replay(final))
    if arguments.json:
        found = _as_json(ref, loaded.version, events, state, entity_type)
        found |= {"ended": loaded.ended, "timers": _plain(timers)}
        print(json.dumps(found, indent=2))
    else:
        print(_as_text(ref, loaded, events, state, entity_type) + _timers_text(timers))


def _event_data(event: RecordedEvent, entity_type: EntityType[Any] | None) -> Any:
    if entity_type is None:
        return _codec.decode(event.data)
    # As the current code reads it: upcast, maybe renamed, split or dropped.
    read = entity_type.decode_events(event.name, event.data, event.schema_version)
    dumped = [entity_type.events.dump(decoded) for decoded in read]
    if len(dumped) == 1 and dumped[0][0] == event.name:
        return _plain(dumped[0][1])
    return _plain([{"name": name, "data": data} for name, data in dumped])


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr))


def _as_json(
    ref: Ref,
    version: int,
    events: list[RecordedEvent],
    state: Any,
    entity_type: EntityType[Any] | None,
) -> dict[str, Any]:
    return {
        "type": ref.type,
        "id": str(ref.id),
        "version": version,
        "state": state,
        "events": [
            {
                "version": e.version,
                "name": e.name,
                "schema_version": e.schema_version,
                "data": _plain(_event_data(e, entity_type)),
                "command_id": e.command_id,
                "recorded_at": e.recorded_at.isoformat(),
            }
            for e in events
        ],
    }


def _as_text(
    ref: Ref,
    loaded: LoadedEntity,
    events: list[RecordedEvent],
    state: Any,
    entity_type: EntityType[Any] | None,
) -> str:
    if loaded.ended == ERASED:
        return f"{ref}: erased (a tombstone: it refuses every command)"
    if loaded.version == 0:
        return f"{ref}: no history (a new entity)"
    ended = " (ended: it refuses every command)" if loaded.ended else ""
    lines = [f"{ref} at version {loaded.version}{ended}", ""]
    width = max(len(e.name) for e in events) if events else 0
    for event in events:
        data = json.dumps(_plain(_event_data(event, entity_type)), ensure_ascii=False)
        when = event.recorded_at.strftime("%Y-%m-%d %H:%M:%S")
        lines.append(
            f"  v{event.version:<5} {when}  {event.name:<{width}}  {data}"
            f"  [command {event.command_id}]"
        )
    lines.append("")
    if entity_type is None:
        lines.append("state: pass --app (or set PACHYDERM_APP) to fold the history into state")
    else:
        lines.append(f"state: {json.dumps(state, ensure_ascii=False)}")
    return "\n".join(lines)


def _timers_text(timers: list[dict[str, Any]]) -> str:
    if not timers:
        return "\ntimers: none pending"
    lines = ["", "timers:"]
    for timer in timers:
        every = f" every {timer['every_seconds']}s" if timer.get("every_seconds") else ""
        data = json.dumps(_plain(timer.get("data")), ensure_ascii=False)
        lines.append(
            f"  {timer['key']}: {timer.get('command')} {data} due {timer['due_at']}{every}"
            + (f" (tried {timer['attempts']} times)" if timer["attempts"] else "")
            + (" HELD: pachyderm timers release to fire it again" if timer.get("held") else "")
        )
    return "\n".join(lines)
