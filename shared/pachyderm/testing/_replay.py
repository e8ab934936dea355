"""Checks against a real store: does the stored history fold into the live state?"""

from __future__ import annotations

from typing import Any

from .._app import App
from .._reference import Ref
from ..store import EventStore

_ANY: Any = object()


async def assert_replay_matches(
    store: EventStore, app: App, ref: Ref, live_state: Any = _ANY
) -> Any:
    """Assert that ``ref``'s full history, its snapshot path and ``live_state`` agree.

    The snapshot path is the runtime's: a snapshot this code does not trust (another
    version of the state or fold took it) is passed over for the full history.
    Returns the replayed state.
    """
    entity_type = app.entity_type(ref.type)
    from_history = entity_type.replay(await store.load(ref, use_snapshot=False))
    from_snapshot = (await entity_type.load(store, ref)).state
    assert from_snapshot == from_history, (
        f"{ref}: snapshot + tail gives {from_snapshot!r}, full history gives {from_history!r}"
    )
    if live_state is not _ANY:
        assert from_history == live_state, (
            f"{ref}: history replays to {from_history!r}, live state is {live_state!r}"
        )
    return from_history
