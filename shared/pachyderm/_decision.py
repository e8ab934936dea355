"""What ``handle`` decided, in one normal form whatever shape it returned."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ._effects import Effect, Send
from ._entity import _FINAL_STATE, AnyEffect, End, Reject, Reply
from ._errors import HandlerError
from ._timers import Cancel, Schedule


class _NewState:
    def __repr__(self) -> str:
        return "NEW_STATE"


NEW_STATE: Final = _NewState()
"""The reply a caller gets by default: the entity's state after the command."""


@dataclass(frozen=True, slots=True)
class Decision:
    events: tuple[Any, ...] = ()
    effects: tuple[AnyEffect, ...] = ()
    reply: Any = NEW_STATE
    rejection: Reject | None = None
    end: bool = False


def _is_sequence(value: object) -> bool:
    return isinstance(value, list | tuple)


def _effects(values: Sequence[Any]) -> tuple[AnyEffect, ...]:
    for value in values:
        if not isinstance(value, Effect | Send | Schedule | Cancel):
            raise HandlerError(
                f"handle returned {value!r} as an effect; use Effect, Send, Schedule or Cancel"
            )
    return tuple(values)


def decision_from(result: object) -> Decision:
    """Normalise a ``handle`` result; :class:`HandlerError` for anything else."""
    if result is None:
        return Decision()
    if isinstance(result, Reject):
        if not isinstance(result.reason, str) or not result.reason:
            raise HandlerError("Reject needs a non-empty string reason")
        return Decision(rejection=result)
    if isinstance(result, End):
        if not _is_sequence(result.events) or not _is_sequence(result.effects):
            raise HandlerError("End takes a list of events and a list of effects")
        if not result.events:
            # The end is a fact of the history, and moving the version is what refuses
            # every change decided on the state before it (see migration 0013).
            raise HandlerError("End needs at least one event: the one that says why it ended")
        reply = NEW_STATE if result.reply is _FINAL_STATE else result.reply
        return Decision(tuple(result.events), _effects(result.effects), reply, end=True)
    if isinstance(result, Reply):
        return Decision(tuple(result.events), _effects(result.effects), result.value)
    if isinstance(result, tuple) and len(result) == 2 and all(map(_is_sequence, result)):
        events, effects = result
        return Decision(tuple(events), _effects(effects))
    if _is_sequence(result):
        return Decision(tuple(result))  # type: ignore[arg-type]
    raise HandlerError(
        f"handle returned {type(result).__name__}; expected events, (events, effects), "
        "Reply, Reject, End or None"
    )
