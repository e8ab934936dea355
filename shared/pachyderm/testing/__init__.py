"""Testing kit: given / when / then for entity logic, replay checks on a store,
and the contract suites every store and transport backend must pass.

::

    given(Counter, Increased(amount=8)).when(Increment(amount=3)).then(
        events=[Increased(amount=3)],
        state={"count": 11},
        effects=[AdminMailer.notify(threshold=10)],
    )

and for a projection, given the log and then its read model (:func:`given_log`)::

    await given_log(app, {alice: [Opened(owner="alice")]}).project(Balances(), connection)

and for upcasters, given events as older code stored them, then what the code sees
(:class:`StoredEvent`); for whole stored histories, :func:`replay_check`::

    given(Account, StoredEvent("Opened", {"owner": "ann"}, schema_version=1)).then(
        events=[Opened(holder="ann")], state=AccountState(owner="ann")
    )

The process fleet (:func:`process_fleet`) is imported on first use, and with it
asyncpg and aio-pika, which entity tests never need. So are the contract suites
(:class:`EventStoreContract`, :class:`TransportContract`), and with them pytest:
``import pachyderm.testing`` works where pytest is not installed.
"""

import importlib
import sys
from typing import TYPE_CHECKING

from .._lazy import lazy_names
from .._replay_check import ReplayProblem, ReplayReport, replay_check
from ._log_scenario import LogScenario, Projected, given_log
from ._replay import assert_replay_matches
from ._scenario import Outcome, Scenario, given
from ._stored_event import StoredEvent
from ._timeline import Pending

if TYPE_CHECKING:
    from ._fleet import ProcessFleet, WorkerProcess, process_fleet
    from ._store_contract import EventStoreContract, StoreFactory
    from ._transport_contract import DeadLetters, InspectableTransport, TransportContract
else:
    _CONTRACTS = {
        "EventStoreContract": "._store_contract",
        "StoreFactory": "._store_contract",
        "DeadLetters": "._transport_contract",
        "InspectableTransport": "._transport_contract",
        "TransportContract": "._transport_contract",
    }
    _FLEET = {"ProcessFleet": "._fleet", "WorkerProcess": "._fleet", "process_fleet": "._fleet"}
    # Hidden from type checkers, which then still report a misspelt name.
    _lazy_getattr = lazy_names(__name__, {**_FLEET, **_CONTRACTS})

    def __getattr__(name: str) -> object:
        contract = _CONTRACTS.get(name)
        if contract is not None and __name__ + contract not in sys.modules:
            # pytest explains a failing assert of the suite as it does in a test
            # module, but it can only rewrite a module not imported yet.
            importlib.import_module("pytest").register_assert_rewrite(__name__ + contract)
        return _lazy_getattr(name)


__all__ = [
    "DeadLetters",
    "EventStoreContract",
    "InspectableTransport",
    "LogScenario",
    "Outcome",
    "Pending",
    "ProcessFleet",
    "Projected",
    "ReplayProblem",
    "ReplayReport",
    "Scenario",
    "StoreFactory",
    "StoredEvent",
    "TransportContract",
    "WorkerProcess",
    "assert_replay_matches",
    "given",
    "given_log",
    "process_fleet",
    "replay_check",
]
