"""The wire contract: commands in, replies out (see docs/protocol.md).

A command is an AMQP message to the commands exchange whose routing key is
the entity id in canonical form (any other spelling is ``invalid``: the
exchange hashes the key as text), whose ``type`` is the command's registered
name, whose ``pachyderm-entity-type`` header names the entity type, and whose
body is the command's fields (msgpack, or JSON by ``content_type``).
``message_id`` is the command id; ``reply_to`` and ``correlation_id`` ask
for a reply. A ``pachyderm-schema-version`` header states the version of the
command's type the body was written with: an older one is upcast on receipt, a
newer one is left for a newer worker; without it the body is read as the
current version.

A reply's body is a map with ``status`` first: ``ok`` (with ``version`` and
``reply``), ``rejected`` (``reason``, ``detail``), ``invalid`` (``error``,
``message``, ``problems``), ``expired`` (``error``, ``message``: sent longer
ago than command ids are kept, see :mod:`._expiry`; not applied), ``ended`` or
``erased`` (``error``, ``message``, ``version``: the entity's life ended, see
:mod:`._ending`; not applied), ``quarantined`` (``error``, ``message``,
``attempts``: a poison command set aside, see :mod:`.worker._quarantine`; not
applied) or ``failed`` (``message``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import _codec
from ._app import App
from ._entity import Reject
from ._entity_type import EntityType
from ._errors import (
    CommandExpiredError,
    CommandQuarantinedError,
    DecodeError,
    EntityEndedError,
    EntityErasedError,
    EntityTypeMismatchError,
    FieldProblem,
    HandlerError,
    InvalidEntityIdError,
    InvalidInputError,
    InvalidMessageError,
    InvalidSentTimeError,
    PachydermError,
    RejectedError,
    UnknownNameError,
    UnsupportedContentTypeError,
)
from ._expiry import stamped
from ._messages import MessageTypes
from ._reference import Ref, parse_entity_id, parse_wire_id
from ._scheduling import Firing
from ._timer_headers import timer_from_headers, timer_headers
from ._timers import FiredTimer
from .store import OutboxEntry
from .transport import Message

ENTITY_TYPE_HEADER = "pachyderm-entity-type"
KIND_HEADER = "pachyderm-kind"
SCHEMA_VERSION_HEADER = "pachyderm-schema-version"
STATUS_HEADER = "pachyderm-status"
COMMAND, QUERY = "command", "query"
TIMER = "timer"
"""The kind of a fire that runs no ``handle`` here (its command goes to another
entity, or its ticks are dropped): made by the firing loop, never read off the wire."""


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded, validated command (or query) for one entity."""

    ref: Ref
    entity_type: EntityType[Any]
    message: Any
    command_id: str
    kind: str = COMMAND
    trace: Mapping[str, str] | None = None
    """The command's W3C trace context headers, kept with its effects in the outbox."""
    timer: FiredTimer | None = None
    """The timer that fired this command (``current_timer()`` in ``handle``)."""
    firing: Firing | None = None
    """For a fire of this worker's own: the timer it consumes, committed with it."""


TRACE_HEADERS = ("traceparent", "tracestate")


def trace_headers(headers: Mapping[str, Any]) -> dict[str, str] | None:
    """The W3C trace context among ``headers`` (text values only), or None."""
    found = {name: value for name in TRACE_HEADERS if isinstance(value := headers.get(name), str)}
    return found if "traceparent" in found else None


def command_message(
    app: App, ref: Ref, command: Any, *, command_id: str | None = None, kind: str = COMMAND
) -> Message:
    """The AMQP message for the typed ``command`` (or query) to ``ref``."""
    registry = app.entity_type(ref.type)
    if kind == QUERY and command is None:
        return named_message(ref, "", None, kind=QUERY)
    types = registry.commands if kind == COMMAND else registry.queries
    name, data = types.dump(command)
    version = types.schema_version(name) if kind == COMMAND else None
    return named_message(ref, name, data, command_id=command_id, kind=kind, schema_version=version)


def named_message(
    ref: Ref,
    name: str,
    data: Any,
    *,
    command_id: str | None = None,
    kind: str = COMMAND,
    schema_version: int | None = None,
) -> Message:
    """The AMQP message for a command (or query) given by name and plain data, written
    with ``schema_version`` of its type (None: the receiver's current version)."""
    headers: dict[str, Any] = {ENTITY_TYPE_HEADER: ref.type, KIND_HEADER: kind}
    if schema_version is not None:
        headers[SCHEMA_VERSION_HEADER] = schema_version
    return Message(
        body=_codec.encode(data),
        routing_key=str(ref.id),
        message_id=command_id or str(uuid.uuid4()),
        content_type=_codec.MSGPACK,
        type=name or None,
        headers=headers,
    )


def _schema_version(headers: Mapping[str, Any], types: MessageTypes, name: str) -> int:
    """The version a command's body was written with: its header, else the current one."""
    version = headers.get(SCHEMA_VERSION_HEADER)
    if version is None:
        return types.schema_version(name)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidInputError(f"{SCHEMA_VERSION_HEADER} must be an integer of 1 or more")
    return version


def parse_request(app: App, message: Message) -> Request:
    """Decode and validate an inbound command; :class:`InvalidInputError` on bad input,
    :class:`NewerSchemaError` for a command of a version newer than this code."""
    headers = message.headers or {}
    kind = headers.get(KIND_HEADER, COMMAND)
    if kind not in (COMMAND, QUERY):
        raise InvalidInputError(f"{KIND_HEADER} must be {COMMAND!r} or {QUERY!r}")
    type_name = headers.get(ENTITY_TYPE_HEADER)
    if not isinstance(type_name, str):
        raise InvalidInputError(f"the {ENTITY_TYPE_HEADER} header must name the entity type")
    entity_type = app.entity_type(type_name)
    # Strict: a routing key in any other spelling hashes to another partition.
    ref = Ref(entity_type.name, parse_wire_id(message.routing_key))
    if not message.message_id and kind == COMMAND:
        raise InvalidInputError("a command needs a message_id: it is the command id")
    data = _codec.decode(message.body, message.content_type)
    if kind == QUERY and not message.type:
        body = None  # the plain query: "what is your state?"
    else:
        types = entity_type.commands if kind == COMMAND else entity_type.queries
        name = message.type or ""
        if kind == COMMAND:
            body = types.load_one(name, data, _schema_version(headers, types, name))
        else:
            body = types.load(name, data)
    return Request(
        ref,
        entity_type,
        body,
        message.message_id or "",
        kind,
        trace_headers(headers),
        timer_from_headers(headers),
    )


# -- effects -------------------------------------------------------------------

EFFECT_ID_HEADER = "pachyderm-effect-id"
SOURCE_ENTITY_HEADER = "pachyderm-source-entity-id"
SOURCE_COMMAND_HEADER = "pachyderm-source-command-id"


def effect_message(entry: OutboxEntry) -> tuple[str, Message]:
    """An outbox entry as ``("command", message)`` for another entity, or
    ``("effect", message)`` for the effects exchange.

    Both carry the effect id as ``message_id``: for an entity it is the
    command id, so however often the effect is published it applies once.
    """
    headers: dict[str, Any] = {
        EFFECT_ID_HEADER: str(entry.effect_id),
        SOURCE_ENTITY_HEADER: str(entry.entity_id),
        SOURCE_COMMAND_HEADER: entry.command_id,
    }
    if entry.destination.startswith("command."):
        sent = _codec.decode(entry.payload)
        if isinstance(timer := sent.get("timer"), dict):
            headers.update(timer_headers(timer))
        if isinstance(version := sent.get("schema_version"), int):
            headers[SCHEMA_VERSION_HEADER] = version  # the sender's version of the command
        # Sent now, as far as the target's expiry check goes: the outbox publishes it
        # once its command committed, and again only if marking it published failed.
        return COMMAND, stamped(
            Message(
                body=_codec.encode(sent["data"]),
                # Re-rendered, so the target's partition never depends on how it was stored.
                routing_key=str(parse_entity_id(sent["entity_id"])),
                message_id=str(entry.effect_id),
                content_type=_codec.MSGPACK,
                type=sent["command"],
                headers={**headers, ENTITY_TYPE_HEADER: sent["entity_type"], KIND_HEADER: COMMAND},
            )
        )
    return "effect", Message(
        body=entry.payload,
        routing_key=entry.destination,
        message_id=str(entry.effect_id),
        content_type=_codec.MSGPACK,
        type=entry.destination.removeprefix("effect."),
        headers=headers,
    )


# -- replies -------------------------------------------------------------------


def _reply(request: Message, body: dict[str, Any]) -> Message:
    content_type = _codec.JSON if _is_json(request.content_type) else _codec.MSGPACK
    return Message(
        body=_codec.encode_as(body, content_type),
        routing_key=request.reply_to or "",
        correlation_id=request.correlation_id or request.message_id,
        content_type=content_type,
        headers={STATUS_HEADER: body["status"]},
    )


def _is_json(content_type: object) -> bool:
    # Never raises: a reply must go out even to a request with a bogus content type.
    return (
        isinstance(content_type, str) and content_type.split(";")[0].strip().lower() == _codec.JSON
    )


def ok_reply(request: Message, version: int, value: Any) -> Message:
    return _reply(request, {"status": "ok", "version": version, "reply": value})


def rejected_reply(request: Message, rejection: Reject) -> Message:
    body = {"status": "rejected", "reason": rejection.reason, "detail": rejection.detail}
    return _reply(request, body)


def error_reply(request: Message, error: PachydermError) -> Message:
    """The reply for a command that failed: bad input, or the entity's own code."""
    if isinstance(error, InvalidInputError):
        problems = error.problems if isinstance(error, InvalidMessageError) else ()
        body: dict[str, Any] = {
            "status": "invalid",
            "error": type(error).__name__,
            "message": str(error),
            "problems": [{"location": p.location, "problem": p.problem} for p in problems],
        }
    elif isinstance(error, CommandExpiredError):
        body = {"status": "expired", "error": type(error).__name__, "message": str(error)}
    elif isinstance(error, EntityEndedError):
        body = {
            "status": error.status,
            "error": type(error).__name__,
            "message": str(error),
            "version": error.version,
        }
    elif isinstance(error, CommandQuarantinedError):
        body = {
            "status": "quarantined",
            "error": type(error).__name__,
            "message": str(error),
            "attempts": error.attempts,
        }
    else:
        body = {"status": "failed", "error": type(error).__name__, "message": str(error)}
    return _reply(request, body)


def read_reply(message: Message) -> tuple[int, Any]:
    """``(version, reply)`` from a reply message, or the error it carries, raised."""
    body = _codec.decode(message.body, message.content_type)
    if not isinstance(body, dict):
        raise DecodeError("a reply must be a map")
    status = body.get("status")
    if status == "ok":
        return int(body.get("version", 0)), body.get("reply")
    if status == "rejected":
        raise RejectedError(str(body.get("reason")), body.get("detail"))
    if status == "invalid":
        raise _invalid_input(body)
    if status == "expired":
        raise CommandExpiredError(str(body.get("message", "the command expired")))
    if status == "quarantined":
        why = str(body.get("message", "the command is quarantined"))
        raise CommandQuarantinedError(why, attempts=_int(body, "attempts"))
    if status in ("ended", "erased"):
        kind = EntityErasedError if status == "erased" else EntityEndedError
        raise kind(str(body.get("message", f"the entity {status}")), version=_int(body))
    raise HandlerError(str(body.get("message", f"reply with status {status!r}")))


_INVALID_INPUT_KINDS: dict[str, type[InvalidInputError]] = {
    kind.__name__: kind
    for kind in (
        InvalidInputError,
        DecodeError,
        UnsupportedContentTypeError,
        UnknownNameError,
        InvalidEntityIdError,
        EntityTypeMismatchError,
        InvalidMessageError,
        InvalidSentTimeError,
    )
}


def _invalid_input(body: dict[str, Any]) -> InvalidInputError:
    """The error an ``invalid`` reply describes, as the class the worker raised."""
    kind = _INVALID_INPUT_KINDS.get(str(body.get("error")), InvalidInputError)
    # The worker's message is kept as it is; the constructors of some kinds
    # would compose another from fields the reply does not carry.
    error = kind.__new__(kind)
    InvalidInputError.__init__(error, str(body.get("message")))
    if isinstance(error, InvalidMessageError):
        error.problems = tuple(
            FieldProblem(str(p.get("location", "")), str(p.get("problem", "")))
            for p in body.get("problems") or ()
            if isinstance(p, dict)
        )
    return error


def _int(body: dict[str, Any], key: str = "version") -> int:
    value = body.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
