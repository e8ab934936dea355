"""The transport contract in memory, plus AMQP topic matching."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pachyderm.testing import DeadLetters, TransportContract
from pachyderm.testing._transport_contract import eventually
from pachyderm.transport import InProcessTransport, Message, Topology
from pachyderm.transport._in_process import topic_matches

PARTITIONS = 4


@pytest.fixture
async def transport(namespace: str) -> AsyncIterator[InProcessTransport]:
    transport = InProcessTransport(Topology(namespace, PARTITIONS))
    await transport.start()
    yield transport
    await transport.close()


@pytest.fixture
def dead_lettered(transport: InProcessTransport) -> DeadLetters:
    async def wait_for(count: int) -> list[Message]:
        await eventually(lambda: len(transport.dead_letters) >= count)
        return transport.dead_letters[:count]

    return wait_for


class TestInProcessTransport(TransportContract):
    pass


@pytest.mark.parametrize(
    ("pattern", "routing_key", "matches"),
    [
        ("effect.mailer", "effect.mailer", True),
        ("effect.mailer", "effect.mailers", False),
        ("effect.mailer", "effect", False),
        ("effect.*", "effect.mailer", True),
        ("effect.*", "effect", False),
        ("effect.*", "effect.mailer.eu", False),
        ("*.mailer", "effect.mailer", True),
        ("effect.#", "effect", True),
        ("effect.#", "effect.mailer.eu", True),
        ("effect.#", "command.deposit", False),
        ("#", "", True),
        ("#", "anything.at.all", True),
        ("#.eu", "effect.mailer.eu", True),
        ("#.eu", "effect.mailer.us", False),
        ("effect.#.eu", "effect.eu", True),
        ("effect.#.eu", "effect.mailer.smtp.eu", True),
        ("effect.*.#", "effect", False),
        ("", "", True),
        ("", "effect", False),
    ],
)
def test_topic_patterns_match_as_amqp_defines(
    pattern: str, routing_key: str, matches: bool
) -> None:
    assert topic_matches(pattern, routing_key) is matches
