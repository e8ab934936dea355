"""A broker connection that is gone is an outage (TransportUnavailableError), whatever
part of aio-pika or aiormq notices it first: callers retry outages and nothing else."""

from __future__ import annotations

import asyncio

import pytest

from pachyderm import TransportUnavailableError
from pachyderm.transport import Message, RabbitMQTransport, _amqp
from pachyderm.transport._amqp import translated_errors

pytestmark = pytest.mark.rabbitmq


async def test_a_pass_over_waiting_effects_on_a_lost_connection_is_an_outage(
    transport: RabbitMQTransport,
) -> None:
    # What a dispatcher's pass meets while the broker restarts: the connection is
    # gone, and aio-pika answers a new channel with a plain RuntimeError.
    session = transport._started()
    await session.connection.close()
    with pytest.raises(TransportUnavailableError, match="RabbitMQ is unavailable"):
        await transport.route_waiting_effects()
    with pytest.raises(TransportUnavailableError):
        await transport.queue_depths()


async def test_other_runtime_errors_are_not_taken_for_an_outage() -> None:
    with pytest.raises(RuntimeError, match="a bug"):
        async with translated_errors("doing something"):
            raise RuntimeError("a bug")


async def test_a_cancellation_raised_from_a_closed_channel_is_an_outage() -> None:
    """aiormq fails what waits on a channel it closes with CancelledError; in a task
    nobody cancelled, that is an outage, not the task's end."""
    with pytest.raises(TransportUnavailableError, match="closed the channel under it"):
        async with translated_errors("acknowledging deliveries"):
            raise asyncio.CancelledError


async def test_a_task_s_own_cancellation_passes_through() -> None:
    entered = asyncio.Event()

    async def waiting() -> None:
        async with translated_errors("publishing replies"):
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(waiting())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_publish_never_confirmed_is_an_outage_once_its_patience_ran_out(
    transport: RabbitMQTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rather than wait for good (a worker's batch did, behind a confirm RabbitMQ 3.10
    never sent after a leader moved): the publisher tries again with the same id."""
    monkeypatch.setattr(_amqp, "CONFIRM_PATIENCE", 0.2)
    channel = await _amqp.underlay(transport._started().publisher)

    async def confirm_lost(_frame: object) -> None:
        pass  # the broker's ack reaches nobody

    monkeypatch.setattr(channel, "_on_confirm_frame", confirm_lost)
    message = Message(b"{}", routing_key="effect.x", message_id="an-effect")
    with pytest.raises(TransportUnavailableError, match=r"did not confirm it within 0\.2 s"):
        await transport.publish_effect(message)
