"""Testing kit: given / when / then for entity logic, and replay checks on a store.

::

    given(Counter, Increased(amount=8)).when(Increment(amount=3)).then(
        events=[Increased(amount=3)],
        state={"count": 11},
        effects=[AdminMailer.notify(threshold=10)],
    )

The process fleet (:func:`process_fleet`) is imported on first use, and with it
asyncpg and aio-pika, which entity tests never need.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_names
from ._replay import assert_replay_matches
from ._scenario import Outcome, Scenario, given

if TYPE_CHECKING:
    from ._fleet import ProcessFleet, WorkerProcess, process_fleet
else:
    # Hidden from type checkers, which then still report a misspelt name.
    __getattr__ = lazy_names(
        __name__,
        {"ProcessFleet": "._fleet", "WorkerProcess": "._fleet", "process_fleet": "._fleet"},
    )

__all__ = [
    "Outcome",
    "ProcessFleet",
    "Scenario",
    "WorkerProcess",
    "assert_replay_matches",
    "given",
    "process_fleet",
]
