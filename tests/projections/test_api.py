"""Registering projections on an App: names and declared events are checked."""

from __future__ import annotations

from typing import Any

import pytest

from pachyderm import (
    App,
    DefinitionError,
    DuplicateNameError,
    Projection,
    ProjectionContext,
    UnknownNameError,
)

from . import tally


class Stranger:
    pass


def projection(name: Any, events: Any) -> Projection:
    class Made(Projection):
        async def apply(self, event: Any, context: ProjectionContext) -> None: ...

    Made.name = name
    Made.events = events
    return Made()


def test_projections_are_registered_by_name() -> None:
    recorder, totals = tally.Recorder(), tally.Totals()
    app = tally.app(recorder, totals)
    assert app.projections == [recorder, totals]
    assert app.projection("totals") is totals
    assert totals.exactly_once
    assert not recorder.exactly_once
    with pytest.raises(UnknownNameError, match="recorder, totals"):
        app.projection("missing")


@pytest.mark.parametrize(
    ("made", "problem"),
    [
        (projection("Bad Name", (tally.Added,)), "name must match"),
        (projection("fine", ()), "non-empty tuple"),
        (projection("fine", [tally.Added]), "non-empty tuple"),
        (projection("fine", (Stranger,)), "no entity type of the app: Stranger"),
    ],
)
def test_malformed_projections_are_refused(made: Projection, problem: str) -> None:
    with pytest.raises(DefinitionError, match=problem):
        tally.app(made)


def test_a_projection_that_applies_nothing_is_refused() -> None:
    class Idle(Projection):
        name = "idle"
        events = (tally.Added,)

    with pytest.raises(DefinitionError, match="neither apply nor apply_many"):
        tally.app(Idle())


def test_a_name_is_registered_once_and_only_projections_are() -> None:
    with pytest.raises(DuplicateNameError):
        tally.app(tally.Recorder(), tally.Recorder())
    with pytest.raises(DefinitionError, match="not a Projection"):
        # The wrong type on purpose: what the runtime check refuses.
        App([tally.Tally], projections=[object()])  # type: ignore[list-item]
