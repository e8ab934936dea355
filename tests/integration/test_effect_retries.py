"""External effect handlers on the real RabbitMQ: a failing handler is tried again with
exponential backoff and jitter, then its effect is dead-lettered; `pachyderm
effects-dead-letters` lists it (leaving it there) and replays it to a fixed handler."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aio_pika
import pytest

from pachyderm import EffectHandler, current_effect
from pachyderm import _codec as codec
from pachyderm._dispatcher import EffectDispatcher
from pachyderm._effect_retries import EffectRetry
from pachyderm.cli import main
from pachyderm.transport import Message, RabbitMQTransport, Topology

from ..waiting import eventually

pytestmark = pytest.mark.rabbitmq

# Waits of 0.1, 0.2 (then 0.4...) seconds, each plus up to 0.1 of jitter.
RETRY = EffectRetry(attempts=3, first=0.1, longest=1.0)


class Flaky(EffectHandler):
    """Fails its first ``failures`` tries of each effect, then succeeds; records when."""

    name = "mailer"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.tries: dict[str, list[float]] = {}
        self.done: list[str] = []

    async def dispatch(self, payload: Any, config: Mapping[str, Any]) -> None:
        effect_id = current_effect().effect_id
        tries = self.tries.setdefault(effect_id, [])
        tries.append(time.monotonic())
        if len(tries) <= self.failures:
            raise ConnectionError(f"the mail server said no ({len(tries)})")
        self.done.append(effect_id)


@pytest.fixture
async def transport(rabbitmq_url: str, namespace: str) -> AsyncIterator[RabbitMQTransport]:
    # The partitions the command line declares by default: nothing extra is left behind.
    started = RabbitMQTransport(rabbitmq_url, Topology(namespace))
    await started.start()
    try:
        yield started
    finally:
        await started.delete_topology()


def effect(effect_id: str) -> Message:
    return Message(
        codec.encode({"to": "ops"}),
        routing_key="effect.mailer",
        message_id=effect_id,
        content_type=codec.MSGPACK,
        headers={"pachyderm-effect-id": effect_id, "pachyderm-source-command-id": "c1"},
    )


async def dispatching(transport: RabbitMQTransport, handler: Flaky) -> EffectDispatcher:
    dispatcher = EffectDispatcher(transport, [handler], retry=RETRY, reroute_interval=60)
    await dispatcher.start()
    return dispatcher


def cli(capsys: pytest.CaptureFixture[str], rabbitmq_url: str, namespace: str, *args: str) -> Any:
    """Run ``pachyderm effects-dead-letters ARGS --json``; its output, parsed."""
    connection = ["--amqp-url", rabbitmq_url, "--namespace", namespace]
    status = main(["effects-dead-letters", *args, "--json", *connection])
    assert status == 0
    return json.loads(capsys.readouterr().out)


async def test_a_handler_failing_twice_is_retried_and_succeeds(
    transport: RabbitMQTransport,
) -> None:
    handler = Flaky(failures=2)
    dispatcher = await dispatching(transport, handler)
    await transport.publish_effect(effect("e-flaky"))

    async def succeeded() -> bool:
        return handler.done == ["e-flaky"]

    await eventually(succeeded, timeout=5)
    tries = handler.tries["e-flaky"]
    assert len(tries) == 3
    waits = [later - earlier for earlier, later in itertools.pairwise(tries)]
    assert waits[0] >= 0.1  # exponential, jitter on top
    assert waits[1] >= 0.2
    assert await transport.dead_lettered_effects() == []
    await dispatcher.stop()


async def test_a_handler_always_failing_ends_in_the_dead_letter_queue_then_is_replayed(
    transport: RabbitMQTransport,
    rabbitmq_url: str,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken = Flaky(failures=1_000)
    dispatcher = await dispatching(transport, broken)
    await transport.publish_effect(effect("e-doomed"))
    # A dead-lettered command beside it: neither listed nor replayed.
    await transport.publish_command(Message(b"{not json", routing_key="x", message_id="cmd"))
    async with await aio_pika.connect(rabbitmq_url) as connection:
        channel = await connection.channel()
        for partition in range(transport.topology.partitions):
            queue = await channel.declare_queue(
                transport.topology.partition_queue(partition), passive=True
            )
            if (incoming := await queue.get(fail=False)) is not None:
                await incoming.reject()

    async def dead_lettered() -> bool:
        return len(await transport.dead_lettered_effects()) == 1

    await eventually(dead_lettered, timeout=5)
    tries = broken.tries["e-doomed"]
    assert len(tries) == RETRY.attempts
    waits = [later - earlier for earlier, later in itertools.pairwise(tries)]
    assert waits[0] >= 0.1
    assert waits[1] >= 0.2
    await dispatcher.stop()
    await transport.close()  # its consumer would take the replay: the fixed one does

    # Listed twice, in a process of its own: reading loses nothing.
    for _ in range(2):
        [listed] = await asyncio.to_thread(cli, capsys, rabbitmq_url, namespace, "list")
        assert listed["effect_id"] == "e-doomed"
        assert listed["handler"] == "mailer"
        assert listed["queue"] == f"{namespace}.effects.handlers"
        assert listed["reason"] == "rejected"
        assert listed["source_command_id"] == "c1"

    fixed = Flaky(failures=0)
    await transport.start()
    dispatcher = await dispatching(transport, fixed)
    [replayed] = await asyncio.to_thread(cli, capsys, rabbitmq_url, namespace, "replay", "--all")
    assert replayed["effect_id"] == "e-doomed"

    async def redelivered() -> bool:
        return fixed.done == ["e-doomed"]

    await eventually(redelivered, timeout=5)
    assert fixed.tries == {"e-doomed": [fixed.tries["e-doomed"][0]]}  # its first try, once
    assert await transport.dead_lettered_effects() == []
    depths = await transport.queue_depths()
    assert depths[transport.topology.dead_letter_queue] == 1  # the command stays
    await dispatcher.stop()


async def test_replaying_an_effect_not_dead_lettered_fails_naming_it(
    transport: RabbitMQTransport, rabbitmq_url: str, namespace: str
) -> None:
    status = await asyncio.to_thread(
        main,
        [
            *("effects-dead-letters", "replay", "--effect-id", "nowhere"),
            *("--amqp-url", rabbitmq_url, "--namespace", namespace),
        ],
    )
    assert status == 1
