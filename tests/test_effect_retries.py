"""Effect retries without a broker: what is tried again, how often, and what is not."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from pachyderm import EffectHandler, UnknownNameError
from pachyderm import _codec as codec
from pachyderm._dispatcher import EffectDispatcher
from pachyderm._effect_retries import EffectRetry
from pachyderm.transport import InProcessTransport, Message, Topology


class Failing(EffectHandler):
    name = "mailer"

    def __init__(self) -> None:
        self.tries = 0

    def dispatch(self, payload: Any, config: Mapping[str, Any]) -> None:
        self.tries += 1
        raise ConnectionError("the mail server said no")


@pytest.fixture
async def transport() -> AsyncIterator[InProcessTransport]:
    started = InProcessTransport(Topology())
    await started.start()
    try:
        yield started
    finally:
        await started.close()


def effect(handler: str = "mailer") -> Message:
    return Message(
        codec.encode(None),
        routing_key=f"effect.{handler}",
        message_id="e1",
        content_type=codec.MSGPACK,
    )


async def test_the_last_tries_error_goes_up_as_it_was(transport: InProcessTransport) -> None:
    handler = Failing()
    dispatcher = EffectDispatcher(transport, [handler], retry=EffectRetry(3, 0.01, 0.02))
    with pytest.raises(ConnectionError, match="said no"):
        await dispatcher.dispatch(effect())
    assert handler.tries == 3


async def test_one_attempt_means_no_retry(transport: InProcessTransport) -> None:
    handler = Failing()
    dispatcher = EffectDispatcher(transport, [handler], retry=EffectRetry(1, 0.01, 0.02))
    with pytest.raises(ConnectionError):
        await dispatcher.dispatch(effect())
    assert handler.tries == 1


async def test_an_effect_without_a_handler_is_not_retried(transport: InProcessTransport) -> None:
    handler = Failing()
    dispatcher = EffectDispatcher(transport, [handler], retry=EffectRetry(3, 5.0, 5.0))
    with pytest.raises(UnknownNameError, match="no handler"):
        await dispatcher.dispatch(effect("nobody"))  # at once: no 5 s wait
    assert handler.tries == 0


@pytest.mark.parametrize(
    ("attempts", "first", "longest"), [(0, 0.5, 30.0), (3, 0.0, 30.0), (3, 2.0, 1.0)]
)
def test_retry_settings_out_of_range_are_refused(
    attempts: int, first: float, longest: float
) -> None:
    with pytest.raises(ValueError, match=r"attempts|first"):
        EffectRetry(attempts, first, longest)
