"""Effect dispatchers count a handler's retries and the effects they dead-letter; a worker
with a cap on commands in flight reports how many it handles."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from examples import counter
from pachyderm import EffectHandler, UnknownNameError, embedded
from pachyderm import _codec as codec
from pachyderm._dispatcher import EffectDispatcher
from pachyderm._effect_retries import EffectRetry
from pachyderm.telemetry import TelemetryHooks
from pachyderm.transport import InProcessTransport, Message, Topology
from pachyderm.worker import WorkerOptions

from .conftest import Recorded


class Flaky(EffectHandler):
    name = "mailer"

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def dispatch(self, payload: Any, config: Mapping[str, Any]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the mail server said no")


def effect(handler: str = "mailer") -> Message:
    body = codec.encode(None)
    return Message(
        body, routing_key=f"effect.{handler}", message_id="e1", content_type=codec.MSGPACK
    )


async def test_retries_and_dead_letters_are_counted_by_handler(recorded: Recorded) -> None:
    transport = InProcessTransport(Topology())
    retry = EffectRetry(attempts=3, first=0.01, longest=0.02)
    recovering = EffectDispatcher(transport, [Flaky(failures=1)], retry=retry)
    await recovering.dispatch(effect())
    assert recorded.total("pachyderm.effects.retried", handler="mailer") == 1
    assert recorded.total("pachyderm.effects.dead_lettered") == 0

    broken = EffectDispatcher(transport, [Flaky(failures=100)], retry=retry)
    with pytest.raises(ConnectionError):
        await broken.dispatch(effect())
    assert recorded.total("pachyderm.effects.retried", handler="mailer") == 3  # 1 + 2
    assert recorded.total("pachyderm.effects.dead_lettered", handler="mailer") == 1

    with pytest.raises(UnknownNameError, match="no handler"):
        await broken.dispatch(effect("nobody"))
    assert recorded.total("pachyderm.effects.dead_lettered", handler="nobody") == 1
    assert recorded.total("pachyderm.effects.retried", handler="nobody") == 0


async def test_a_worker_with_a_cap_reports_its_commands_in_flight(recorded: Recorded) -> None:
    async with embedded(counter.app, options=WorkerOptions(max_in_flight=5)) as fleet:
        await fleet.client.call(counter.Counter.ref("c"), counter.Increment())
        [point] = recorded.points("pachyderm.commands.in_flight")
        assert point.value == 0  # the call's batch is done: its room came back
    async with embedded(counter.app, options=WorkerOptions(max_in_flight=0)):
        assert recorded.points("pachyderm.commands.in_flight") == []  # no cap, no gauge


def test_the_gauge_sums_what_the_hooks_are_given(recorded: Recorded) -> None:
    with TelemetryHooks().in_flight(lambda: 3), TelemetryHooks().in_flight(lambda: 4):
        assert recorded.total("pachyderm.commands.in_flight") == 7
