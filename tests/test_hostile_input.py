"""Hostile and buggy publishers: whatever arrives, every message with a reply address
gets a clear answer, nothing crashes the worker, and the partition keeps flowing."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from examples import bank, counter
from pachyderm import App
from pachyderm import _codec as codec
from pachyderm._embedded import EmbeddedFleet, embedded
from pachyderm._wire import ENTITY_TYPE_HEADER, KIND_HEADER
from pachyderm.transport import Message

APP = App([counter.Counter, bank.Account])
# "failed" is for entity code that raises, which these entities never do: here it
# would mean the worker itself broke on the input and only its safety net answered.
STATUSES = {"ok", "rejected", "invalid"}

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    st.binary(max_size=200),
    plain.map(lambda value: msgpack.packb(value, use_bin_type=True)),
    st.dictionaries(st.sampled_from(["owner", "amount", "to", "x"]), plain, max_size=3).map(
        lambda value: msgpack.packb(value, use_bin_type=True)
    ),
    st.just(b"[" * 500),
    st.just(msgpack.packb({1: 2})),
    st.just(msgpack.packb(msgpack.ExtType(3, b"abc"))),
)
headers = st.one_of(
    st.just({ENTITY_TYPE_HEADER: "account"}),
    st.just({ENTITY_TYPE_HEADER: "counter"}),
    st.dictionaries(
        st.sampled_from([ENTITY_TYPE_HEADER, KIND_HEADER, "x-forged", "traceparent"]),
        st.one_of(st.text(max_size=30), st.integers(), st.binary(max_size=10), st.none()),
        max_size=3,
    ),
)
routing_keys = st.one_of(
    st.uuids().map(str),
    st.text(max_size=60),
    st.just(str(bank.account("alice").id)),
)
messages = st.builds(
    Message,
    body=bodies,
    routing_key=routing_keys,
    message_id=st.one_of(st.none(), st.text(max_size=40), st.uuids().map(str)),
    content_type=st.one_of(
        st.none(),
        st.sampled_from(["application/msgpack", "application/json", "text/plain", "", "a" * 300]),
    ),
    type=st.one_of(
        st.none(),
        st.sampled_from(["Open", "Deposit", "Withdraw", "Transfer", "Increment", "Nope", ""]),
        st.text(max_size=30),
    ),
    headers=headers,
)


# No shrinking: once the worker is broken every example times out, and shrinking
# would spend minutes confirming it; the first failing example is reported as is.
FAIL_FAST = [Phase.explicit, Phase.reuse, Phase.generate]


@pytest.fixture(scope="module")
def loop_fleet() -> Any:
    """One embedded fleet for every generated message (module scoped: hypothesis runs
    many examples, and a fresh fleet each would test start-up, not input)."""
    loop = asyncio.new_event_loop()
    context = embedded(APP)
    fleet = loop.run_until_complete(context.__aenter__())
    yield loop, fleet
    loop.run_until_complete(context.__aexit__(None, None, None))
    loop.close()


async def round_trip(fleet: EmbeddedFleet, message: Message) -> dict[str, Any]:
    replies: asyncio.Queue[Message] = asyncio.Queue()

    async def on_reply(reply: Message) -> None:
        await replies.put(reply)

    address = await fleet.transport.listen_replies(on_reply)
    correlation = str(uuid.uuid4())
    await fleet.transport.publish_command(
        Message(
            message.body,
            message.routing_key,
            message.message_id,
            correlation,
            address,
            message.content_type,
            message.type,
            message.headers,
        )
    )
    reply = await asyncio.wait_for(replies.get(), 2)
    assert reply.correlation_id == correlation
    body = codec.decode(reply.body, reply.content_type)
    assert isinstance(body, dict)
    return body


async def still_flowing(fleet: EmbeddedFleet) -> None:
    ref = counter.Counter.ref("canary")
    before = await fleet.client.query(ref, timeout=2)
    after = await fleet.client.call(ref, counter.Increment(amount=1), timeout=2)
    assert after == {"count": before["count"] + 1}


@settings(
    max_examples=300,
    deadline=None,
    phases=FAIL_FAST,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(message=messages)
def test_every_message_gets_a_clear_reply_and_the_fleet_keeps_flowing(
    loop_fleet: Any, message: Message
) -> None:
    loop, fleet = loop_fleet
    body = loop.run_until_complete(round_trip(fleet, message))
    assert body["status"] in STATUSES, body
    if body["status"] == "invalid":
        assert isinstance(body["message"], str)
        assert body["message"]
        assert "Traceback" not in body["message"]
    loop.run_until_complete(still_flowing(fleet))


@settings(
    max_examples=60,
    deadline=None,
    phases=FAIL_FAST,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(message=messages)
def test_unanswerable_garbage_is_dead_lettered_or_applied_never_lost(
    loop_fleet: Any, message: Message
) -> None:
    loop, fleet = loop_fleet
    transport = fleet.transport
    before = len(transport.dead_letters)
    loop.run_until_complete(transport.publish_command(message))
    loop.run_until_complete(still_flowing(fleet))  # the canary queues behind it
    assert len(transport.dead_letters) - before in (0, 1)
