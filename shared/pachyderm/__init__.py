"""Pachyderm: durable, event-sourced entities (virtual actors) for Python."""

from typing import TYPE_CHECKING

from ._app import App
from ._client import Answer, Client
from ._context import EffectContext, current_effect, current_ref
from ._effects import Effect, EffectHandler, Send
from ._embedded import EmbeddedFleet, embedded
from ._entity import End, Entity, HandleResult, Reject, Reply
from ._errors import (
    CallTimeoutError,
    CommandExpiredError,
    CommandQuarantinedError,
    DecodeError,
    DefinitionError,
    DuplicateNameError,
    DuplicateWorkerError,
    EntityEndedError,
    EntityErasedError,
    EntityTypeMismatchError,
    FieldProblem,
    HandlerError,
    InvalidEntityIdError,
    InvalidInputError,
    InvalidMessageError,
    InvalidSentTimeError,
    MigrationError,
    NewerSchemaError,
    PachydermError,
    RejectedError,
    StoreError,
    StoreUnavailableError,
    TransportError,
    TransportUnavailableError,
    UnknownNameError,
    UnsupportedContentTypeError,
)
from ._lazy import lazy_names
from ._overload import FleetUnavailableError, OverloadedError
from ._projection import AnyEvent, PostgresProjection, Projection, ProjectionContext
from ._reference import Ref, entity_id
from ._running import run
from ._settings import Settings, load_settings
from ._timers import Cancel, FiredTimer, Schedule, current_timer
from ._upcasting import Upcaster, upcaster

if TYPE_CHECKING:
    from .projections._relay import EventRelay
else:
    # The relay brings aio-pika: imported when first used. Hidden from type checkers,
    # which then still report a misspelt name.
    __getattr__ = lazy_names(__name__, {"EventRelay": ".projections._relay"})

__all__ = [
    "Answer",
    "AnyEvent",
    "App",
    "CallTimeoutError",
    "Cancel",
    "Client",
    "CommandExpiredError",
    "CommandQuarantinedError",
    "DecodeError",
    "DefinitionError",
    "DuplicateNameError",
    "DuplicateWorkerError",
    "Effect",
    "EffectContext",
    "EffectHandler",
    "EmbeddedFleet",
    "End",
    "Entity",
    "EntityEndedError",
    "EntityErasedError",
    "EntityTypeMismatchError",
    "EventRelay",
    "FieldProblem",
    "FiredTimer",
    "FleetUnavailableError",
    "HandleResult",
    "HandlerError",
    "InvalidEntityIdError",
    "InvalidInputError",
    "InvalidMessageError",
    "InvalidSentTimeError",
    "MigrationError",
    "NewerSchemaError",
    "OverloadedError",
    "PachydermError",
    "PostgresProjection",
    "Projection",
    "ProjectionContext",
    "Ref",
    "Reject",
    "RejectedError",
    "Reply",
    "Schedule",
    "Send",
    "Settings",
    "StoreError",
    "StoreUnavailableError",
    "TransportError",
    "TransportUnavailableError",
    "UnknownNameError",
    "UnsupportedContentTypeError",
    "Upcaster",
    "current_effect",
    "current_ref",
    "current_timer",
    "embedded",
    "entity_id",
    "load_settings",
    "run",
    "upcaster",
]
