"""What ``handle`` decided, in one normal form whatever shape it returned."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ._effects import Effect, Send
from ._entity import AnyEffect, Reject, Reply
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
    if isinstance(result, Reply):
        return Decision(tuple(result.events), _effects(result.effects), result.value)
    if isinstance(result, tuple) and len(result) == 2 and all(map(_is_sequence, result)):
        events, effects = result
        return Decision(tuple(events), _effects(effects))
    if _is_sequence(result):
        return Decision(tuple(result))  # type: ignore[arg-type]
    raise HandlerError(
        f"handle returned {type(result).__name__}; expected events, (events, effects), "
        "Reply, Reject or None"
    )
