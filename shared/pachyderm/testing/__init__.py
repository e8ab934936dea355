"""Testing kit: given / when / then for entity logic, and replay checks on a store.

::

    given(Counter, Increased(amount=8)).when(Increment(amount=3)).then(
        events=[Increased(amount=3)],
        state={"count": 11},
        effects=[AdminMailer.notify(threshold=10)],
    )
"""

from ._fleet import ProcessFleet, WorkerProcess, process_fleet
from ._replay import assert_replay_matches
from ._scenario import Outcome, Scenario, given

__all__ = [
    "Outcome",
    "ProcessFleet",
    "Scenario",
    "WorkerProcess",
    "assert_replay_matches",
    "given",
    "process_fleet",
]
