"""Operators' view of the quarantine, shared by ``pachyderm quarantine`` and the
gateway's admin routes: list, show, resume and skip quarantined commands.

A decision only moves the database row (see :mod:`pachyderm.store._quarantine`);
the partition's owner carries it out within a second (see
:mod:`pachyderm.worker._quarantine`). Every decision is audited in the logs
(``command.resume_requested`` / ``command.skip_requested``, with who asked).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from ._codec import decode
from ._errors import InvalidEntityIdError, PachydermError
from ._stored_messages import decode_message
from .store import EventStore, HasQuarantine, NotQuarantinedError, Quarantined, QuarantineStore
from .store._quarantine import Decision, check_decision

log = logging.getLogger("pachyderm.audit")


def quarantine_of(store: EventStore) -> QuarantineStore:
    """The store's quarantine; :class:`PachydermError` for a store that keeps none."""
    if not isinstance(store, HasQuarantine):
        raise PachydermError(f"{type(store).__name__} keeps no quarantine")
    return store.quarantine_store()


def entity_id(text: str) -> uuid.UUID:
    """An entity id as an operator types it; :class:`InvalidEntityIdError` otherwise."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidEntityIdError(f"{text!r} is not an entity id (a UUID)") from None


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def describe(row: Quarantined, *, command: bool = False) -> dict[str, Any]:
    """``row`` as plain data; with ``command``, the command as received too (its name,
    reply address, headers and fields, decoded when they can be)."""
    found: dict[str, Any] = {
        "entity_id": str(row.entity_id),
        "command_id": row.command_id,
        "entity_type": row.entity_type,
        "partition": row.partition,
        "policy": row.policy,
        "status": row.status,
        "attempts": row.attempts,
        "reason": row.reason,
        "parked": row.parked,
        "quarantined_at": _time(row.quarantined_at),
        "decided_at": _time(row.decided_at),
    }
    if command:
        message = decode_message(row.message)
        try:
            fields: Any = decode(message.body, message.content_type)
        except PachydermError as error:
            fields = f"<not decodable: {error}>"
        found["command"] = {
            "name": message.type,
            "content_type": message.content_type,
            "reply_to": message.reply_to,
            "headers": {k: v for k, v in message.headers.items() if not isinstance(v, bytes)},
            "fields": fields,
        }
    return found


async def listing(store: EventStore, *, limit: int = 1000) -> list[Quarantined]:
    """The quarantined commands, oldest first."""
    return await quarantine_of(store).quarantined(limit=limit)


async def find(store: EventStore, entity: uuid.UUID, command_id: str) -> Quarantined:
    """One quarantined command; :class:`NotQuarantinedError` when there is none."""
    row = await quarantine_of(store).find(entity, command_id)
    if row is None:
        raise NotQuarantinedError(f"no command {command_id!r} of entity {entity} is quarantined")
    return row


async def decide(
    store: EventStore, entity: uuid.UUID, command_id: str, decision: str, *, actor: str
) -> Quarantined:
    """Resume or skip a quarantined command (audited); the row as it is now."""
    chosen: Decision = check_decision(decision)
    row = await quarantine_of(store).decide(entity, command_id, chosen)
    log.warning(
        "%s asked to %s command %s of %s %s",
        actor,
        chosen,
        command_id,
        row.entity_type,
        entity,
        extra={
            "event": f"command.{chosen}_requested",
            "actor": actor,
            "entity_id": str(entity),
            "command_id": command_id,
            "entity_type": row.entity_type,
        },
    )
    return row
