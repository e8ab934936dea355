"""The benchmark serves the example counter itself, without its effect.

The baselines it is compared with have no outbox, so each system must do the
same work per command: one event folded, the new count replied, no effect.
"""

from __future__ import annotations

from bench.app import APP, COMMAND, ENTITY_TYPE
from examples import counter
from pachyderm.testing import given


def test_the_benchmark_serves_the_example_counter_and_nothing_else() -> None:
    (served,) = list(APP)
    assert type(served.entity) is counter.Counter
    assert (served.name, COMMAND) == (ENTITY_TYPE, "Increment")
    assert served.commands.names == ["Increment"]
    assert served.events.names == ["Increased"]
    assert APP.effect_handlers == []


def test_the_benchmark_counter_never_produces_an_effect() -> None:
    (served,) = list(APP)
    given(served.entity, counter.Increased(amount=9)).when(counter.Increment(amount=5)).then(
        events=[counter.Increased(amount=5)], state={"count": 14}, reply={"count": 14}, effects=[]
    )
