"""The error hierarchy: every error Pachyderm raises is a :class:`PachydermError`.

The tree is small on purpose. Callers usually need to tell apart only three
situations: their input was bad (fix the input), the entity said no (show the
reason), or infrastructure failed (retry later).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class PachydermError(Exception):
    """Root of every error raised by Pachyderm."""


class DefinitionError(PachydermError):
    """An entity, message type or app is declared wrongly (a programming error)."""


class DuplicateNameError(DefinitionError):
    """Two things were registered under one name, or one thing under two names."""


class InvalidInputError(PachydermError):
    """Input from outside (a publisher, a caller, a file) cannot be accepted."""


class DecodeError(InvalidInputError):
    """Bytes are not a well-formed, acceptable message (syntax, size, nesting, types)."""


class UnsupportedContentTypeError(DecodeError):
    """The message declares a content type Pachyderm does not read."""


class UnknownNameError(InvalidInputError):
    """A name (entity type, command, event, effect handler) is not registered."""


class InvalidEntityIdError(InvalidInputError):
    """An entity id is not a UUID."""


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One problem with one field: ``location`` is a dotted path such as ``items.2.sku``."""

    location: str
    problem: str

    def __str__(self) -> str:
        return f"{self.location or '<root>'}: {self.problem}"


class InvalidMessageError(InvalidInputError):
    """A decoded message does not match its declared type; ``problems`` names each field."""

    message_name: str = ""
    problems: tuple[FieldProblem, ...] = ()

    def __init__(self, message_name: str, problems: Sequence[FieldProblem]) -> None:
        self.message_name = message_name
        self.problems = tuple(problems)
        listed = "; ".join(str(problem) for problem in self.problems)
        super().__init__(f"invalid {message_name}: {listed}")


class EntityTypeMismatchError(InvalidInputError):
    """An id that belongs to an entity of one type was addressed as another type."""

    stored_type: str | None = None
    requested_type: str | None = None

    def __init__(self, entity_id: object, stored_type: str, requested_type: str) -> None:
        self.stored_type = stored_type
        self.requested_type = requested_type
        super().__init__(f"entity {entity_id} is a {stored_type!r}, not a {requested_type!r}")


class DuplicateWorkerError(PachydermError):
    """Another live process runs under this worker id: each worker of a fleet needs its own.

    ``other`` describes that process as it registered itself (host and process
    id). Raised when a worker joins under an id whose holder is still live,
    and when a worker finds that another process took its id over (it stops).
    """

    worker_id: str = ""
    other: str = ""

    def __init__(self, message: str, *, worker_id: str, other: str) -> None:
        self.worker_id = worker_id
        self.other = other
        super().__init__(message)


class HandlerError(PachydermError):
    """An entity's own code raised, or returned something ``handle`` may not return."""


class RejectedError(PachydermError):
    """The entity refused the command; ``reason`` and ``detail`` are its own words."""

    def __init__(self, reason: str, detail: object = None) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"rejected: {reason}")


class CallTimeoutError(PachydermError):
    """No reply came in time. The command may still apply: retry with the same command id."""


class NewerSchemaError(PachydermError):
    """A stored message (an event, a snapshot, a command) was written by newer code than
    this: its name is unknown here or its schema version is above this code's.

    Retryable: it is not for this worker. The entity is not decided on here (a state
    folded without that event would be misread); a worker running the newer code will.
    ``name`` and ``schema_version`` are the message's as stored.
    """

    name: str = ""
    schema_version: int = 0

    def __init__(self, message: str, *, name: str = "", schema_version: int = 0) -> None:
        self.name = name
        self.schema_version = schema_version
        super().__init__(message)


class StoreError(PachydermError):
    """The event store failed in a way that is not the caller's fault."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached or dropped the connection; retry later."""


class MigrationError(StoreError):
    """The schema could not be brought to the version this code needs."""


class TransportError(PachydermError):
    """The message broker failed or refused an operation, not the caller's input."""


class TransportUnavailableError(TransportError):
    """The message broker cannot be reached or dropped the connection; retry later."""


class InvalidSentTimeError(InvalidInputError):
    """A command's sent time (header ``pachyderm-sent-at``) is not milliseconds since the
    Unix epoch, or lies further in the future than the clocks may disagree."""


class CommandExpiredError(PachydermError):
    """The command was sent longer ago than its id is kept (``PACHYDERM_COMMAND_RETENTION``
    less a margin): it was refused, not applied, since it could otherwise apply twice.

    The reply status is ``expired``. Whether an earlier copy of it applied shows in the
    entity's state; to apply it now, send it again under a new command id.
    """


class EntityEndedError(PachydermError):
    """The entity's life ended: its handler ended it (reply status ``ended``), or, as
    :class:`EntityErasedError`, an operator erased it. The command was not applied and
    never will be; queries of an ended (not erased) entity still read its final state.
    ``version`` is the entity's version as it ended."""

    status = "ended"

    def __init__(self, message: str, *, version: int = 0) -> None:
        self.version = version
        super().__init__(message)


class EntityErasedError(EntityEndedError):
    """The entity was erased (``pachyderm erase``): its history is gone and its id is a
    tombstone that refuses every command and query (reply status ``erased``)."""

    status = "erased"


class CommandQuarantinedError(PachydermError):
    """The command used up its attempts (each crashed, hung or killed its worker) and
    was quarantined: it was not applied. An operator resumes it (it runs again, then
    its entity's parked commands in order) or skips it (``pachyderm quarantine``).

    The reply status is ``quarantined``; ``attempts``: the attempts it had used.
    """

    def __init__(self, message: str, *, attempts: int = 0) -> None:
        self.attempts = attempts
        super().__init__(message)
