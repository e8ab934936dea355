"""The JSON bodies the gateway takes and answers, each defined once, as a model.

The routes answer with instances of these models (:meth:`Body.response`) and
the OpenAPI document's schemas are generated from the same classes, so what
is sent and what is described cannot differ. A body's members are its
fields, in order; a model takes no other member (``extra="forbid"``), so a
body cannot carry one its schema does not declare. The class names are the
document's schema names: renaming one renames a published schema. Docstrings
and field descriptions are published as the schemas' descriptions. (The
health bodies are :mod:`pachyderm.telemetry`'s, served by workers too.)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, RootModel, WithJsonSchema
from starlette.responses import JSONResponse, Response

# As the store gives it ("+00:00"); pydantic's own serialiser would write "Z".
Timestamp = Annotated[
    datetime,
    PlainSerializer(datetime.isoformat, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
UriReference = Annotated[str, WithJsonSchema({"type": "string", "format": "uri-reference"})]

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:pachyderm:problem:"


class Fields(RootModel[dict[str, Any]]):
    """A command's or a query's fields, as a JSON object ({} for none); the message's
    registered class checks them."""


class Body(BaseModel):
    """A JSON body the gateway answers."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Sent as, and documented as: one class, one content type.
    media_type: ClassVar[str] = "application/json"

    def response(self, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        """This body as a response, with its own content type."""
        # json.dumps writes the JSON, as for any other answer (pydantic's writer
        # spells some floats otherwise): the model fixes the members, not the bytes.
        return JSONResponse(
            self.model_dump(mode="json"), status, dict(headers or {}), self.media_type
        )


class Reply(Body):
    """The answer to a command or a query."""

    version: int = Field(ge=0, description="The entity's version after it (0: never written)")
    reply: Any = Field(description="A command's: the new state, unless the entity chose another")


class State(Body):
    """An entity's state."""

    type: str
    id: uuid.UUID
    version: int = Field(ge=0, description="0: never written")
    state: Any


class Event(Body):
    """One event of an entity's history."""

    version: int = Field(ge=1)
    name: str
    data: Any
    command_id: str | None
    recorded_at: Timestamp
    schema_version: int = Field(
        1,
        ge=1,
        description="The version of the event's type it was written with: name and data"
        " are as stored, not upcast",
    )


class History(Body):
    """A page of an entity's events, oldest first."""

    type: str
    id: uuid.UUID
    events: list[Event]
    next: UriReference | None = Field(description="The next page; null on the last")


class EntitySummary(Body):
    """An entity as a listing shows it."""

    id: uuid.UUID
    version: int = Field(ge=1)
    updated_at: Timestamp = Field(description="When a command last changed it")


class Entities(Body):
    """A page of the entities of a type, in the order asked for."""

    type: str
    entities: list[EntitySummary]
    next: UriReference | None = Field(description="The next page; null on the last")


class Timer(Body):
    """A pending timer of an entity: what it will deliver, and when."""

    key: str
    due_at: Timestamp = Field(description="When it falls due; it never fires before")
    next_try_at: Timestamp = Field(description="Later than due_at only after failed tries")
    attempts: int = Field(ge=0, description="Tries that failed, or that may have (counted first)")
    held: bool = Field(
        False,
        description="Held after PACHYDERM_MAX_ATTEMPTS tries (a poison?) until an operator"
        " releases it: pachyderm timers release",
    )
    command: str | None = Field(None, description="The command it delivers, by registered name")
    data: Any = Field(None, description="The command's fields")
    to: dict[str, str] | None = Field(
        None, description="The entity it delivers to ({type, id}); null: this one"
    )
    every_seconds: float | None = Field(None, description="The period; null: one-shot")
    missed: str | None = Field(None, description="A periodic timer's missed-fire policy")
    error: str | None = Field(None, description="Why this code cannot read it, if it cannot")


class Timers(Body):
    """An entity's pending timers, soonest first."""

    type: str
    id: uuid.UUID
    timers: list[Timer]


class Problem(Body):
    """An RFC 9457 problem document."""

    media_type: ClassVar[str] = PROBLEM_JSON

    type: UriReference = Field(description=f"about:blank, or {TYPE_PREFIX}<kind>")
    title: str
    status: int
    detail: str


class FieldProblem(Body):
    """What is wrong with one field."""

    location: str
    problem: str


class InvalidFieldsProblem(Problem):
    """The fields do not match the command or query: each problem, by field."""

    problems: list[FieldProblem]


class RejectionProblem(Problem):
    """The entity rejected the command, in its own words."""

    reason: str
    rejection_detail: Any
