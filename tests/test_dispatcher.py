"""The effect dispatcher tells a handler which effect it carries out (current_effect)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from pachyderm import (
    EffectContext,
    EffectHandler,
    InvalidInputError,
    PachydermError,
    current_effect,
)
from pachyderm import _codec as codec
from pachyderm._dispatcher import EffectDispatcher
from pachyderm.transport import InProcessTransport, Message, Topology

EFFECT_ID = "0b6f4e8a-3d3c-5a7e-9d64-5d2f1c7b9e10"


class Remembering(EffectHandler):
    """Records what current_effect() says, the way a de-duplicating handler reads it."""

    name = "mailer"

    def __init__(self) -> None:
        self.seen: list[EffectContext] = []

    async def dispatch(self, payload: Any, config: Mapping[str, Any]) -> None:
        self.seen.append(current_effect())


@pytest.fixture
def handler() -> Remembering:
    return Remembering()


@pytest.fixture
async def dispatcher(handler: Remembering) -> AsyncIterator[EffectDispatcher]:
    transport = InProcessTransport(Topology())
    await transport.start()
    try:
        yield EffectDispatcher(transport, [handler])
    finally:
        await transport.close()


def effect(**headers: Any) -> Message:
    return Message(
        codec.encode({"to": "ops"}),
        routing_key="effect.mailer",
        message_id=EFFECT_ID,
        content_type=codec.MSGPACK,
        headers={
            "pachyderm-effect-id": EFFECT_ID,
            "pachyderm-source-entity-id": "5c1d1f6e-7d0a-4c4b-8a0e-2b1f0f9d7a11",
            "pachyderm-source-command-id": "crossing",
            **headers,
        },
    )


async def test_a_first_delivery_is_attempt_1_with_the_effects_ids(
    dispatcher: EffectDispatcher, handler: Remembering
) -> None:
    await dispatcher.dispatch(effect())
    assert handler.seen == [
        EffectContext(
            effect_id=EFFECT_ID,
            attempt=1,
            handler="mailer",
            source_entity_id="5c1d1f6e-7d0a-4c4b-8a0e-2b1f0f9d7a11",
            source_command_id="crossing",
        )
    ]


@pytest.mark.parametrize(
    ("delivery_count", "attempt"),
    # RabbitMQ's quorum queues count earlier deliveries (0 on the first, on 4.x).
    [(0, 1), (1, 2), (4, 5), ("2", 1), (True, 1), (-3, 1)],
)
async def test_the_attempt_is_the_brokers_delivery_count_plus_one(
    dispatcher: EffectDispatcher, handler: Remembering, delivery_count: object, attempt: int
) -> None:
    await dispatcher.dispatch(effect(**{"x-delivery-count": delivery_count}))
    assert [(seen.effect_id, seen.attempt) for seen in handler.seen] == [(EFFECT_ID, attempt)]


async def test_a_synchronous_handler_sees_its_effect_too(dispatcher: EffectDispatcher) -> None:
    seen: list[EffectContext] = []

    class Plain(EffectHandler):
        name = "mailer"

        def dispatch(self, payload: Any, config: Mapping[str, Any]) -> None:
            seen.append(current_effect())

    await EffectDispatcher(dispatcher.transport, [Plain()]).dispatch(effect())
    assert [context.effect_id for context in seen] == [EFFECT_ID]


async def test_the_effect_is_known_only_while_its_handler_runs(
    dispatcher: EffectDispatcher, handler: Remembering
) -> None:
    with pytest.raises(PachydermError, match=r"only available inside EffectHandler\.dispatch"):
        current_effect()
    await dispatcher.dispatch(effect())
    with pytest.raises(PachydermError, match=r"only available inside EffectHandler\.dispatch"):
        current_effect()


async def test_an_effect_without_an_id_is_refused_before_its_handler_runs(
    dispatcher: EffectDispatcher, handler: Remembering
) -> None:
    anonymous = Message(codec.encode(None), routing_key="effect.mailer", content_type=codec.MSGPACK)
    with pytest.raises(InvalidInputError, match="an effect needs a message_id"):
        await dispatcher.dispatch(anonymous)
    assert handler.seen == []
