"""Calling entities: request and reply over the transport (RPC over AMQP).

Invariant: every way of calling returns the same thing for the same answer:
``call``, ``call_named`` and ``query`` the reply alone (plain data, as decoded
from the wire), ``request`` the reply with the entity's version after it, as an
:class:`Answer`. A client answers calls only between its start and its close.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any, NamedTuple

from . import transport as transports
from ._app import App
from ._errors import CallTimeoutError, PachydermError
from ._expiry import stamped, with_sent_at
from ._loading import load_app
from ._overload import FleetWatch, InFlightLimit, PartitionConsumers
from ._reference import Ref
from ._settings import Settings, load_settings
from ._wire import COMMAND, QUERY, command_message, named_message, read_reply
from .telemetry._messaging import publishing
from .transport import Message, Transport

DEFAULT_TIMEOUT = 10.0
# How long a call waits for a place when the client's calls in flight are at its limit.
DEFAULT_WAIT = 1.0


def topology_of(settings: Settings) -> transports.Topology:
    """The namespace's topology as the settings give it (the same in every process)."""
    return transports.Topology(
        settings.namespace,
        settings.partitions,
        max_length=settings.queue_max_length,
        overflow=settings.queue_overflow,
    )


def client_options(settings: Settings) -> dict[str, Any]:
    """A :class:`Client`'s keyword arguments from the settings."""
    return {
        "timeout": settings.call_timeout,
        "max_in_flight": settings.client_max_in_flight or None,
        "wait": settings.client_wait,
    }


class Answer(NamedTuple):
    """A call's full answer: the entity's ``version`` after it, and the ``reply``."""

    version: int
    reply: Any


class Client:
    """Sends commands and queries to entities and waits for their replies.

    ``call`` (typed command), ``call_named`` (a name and plain data) and
    ``query`` return the reply (the entity's new state unless its ``handle``
    chose another); ``request`` returns it with the entity's version, as an
    :class:`Answer`. All raise :class:`~pachyderm.RejectedError`,
    :class:`~pachyderm.InvalidInputError`, :class:`~pachyderm.HandlerError` or
    :class:`~pachyderm.CallTimeoutError`, or :class:`~pachyderm.CommandExpiredError`
    for a command that reached its worker after the command window. Retrying a
    call with the same ``command_id`` is safe: the command applies once and the
    retry gets the stored reply, as long as the retry comes within the window
    the fleet keeps command ids for (``PACHYDERM_COMMAND_RETENTION``, 7 days by
    default) of the first try. The client retries nothing itself: its retry
    budget is one call of at most ``timeout`` seconds (``PACHYDERM_CALL_TIMEOUT``,
    10 s by default), far inside the window. Every message it sends carries
    its sent time (header ``pachyderm-sent-at``): a worker refuses a command that
    waited longer than the window, less a margin, rather than risk applying it
    twice. The sent time is now unless the caller gives ``sent_at`` (a
    timezone-aware :class:`~datetime.datetime`): a caller that retries a command
    later with its own budget (a job re-run, a queue of its own) passes the
    first send's time, so the window counts from the first send.

    ``max_in_flight`` bounds the calls (and sends) in flight at once (None: no
    bound); beyond it a caller waits up to ``wait`` seconds for one to end, then
    gets :class:`~pachyderm.OverloadedError` without anything being sent, as it
    does when the partition queue is full and refuses the command
    (``PACHYDERM_QUEUE_MAX_LENGTH`` with ``reject-publish``). With ``fleet_check``
    (seconds), a call first looks (at most that often, over RabbitMQ) whether any
    worker consumes the partition queues, and raises
    :class:`~pachyderm.FleetUnavailableError` at once when none does, instead of
    timing out; the gateway does this, as a call waiting for a fleet that is not
    there holds an HTTP request for nothing.

    Against a fleet, :meth:`connect` builds, starts and closes everything a
    client needs::

        async with Client.connect(load_settings(), app) as client:
            await client.call(Counter.ref("visits"), Increment())
    """

    def __init__(
        self,
        app: App | None,
        transport: Transport,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_in_flight: int | None = None,
        wait: float = DEFAULT_WAIT,
        fleet_check: float | None = None,
    ) -> None:
        self.app = app
        self.transport = transport
        self.timeout = timeout
        self.in_flight = InFlightLimit(max_in_flight, wait)
        self.fleet: FleetWatch | None = None
        if fleet_check:
            if not isinstance(transport, PartitionConsumers):
                raise ValueError(f"{type(transport).__name__} cannot tell whether workers consume")
            self.fleet = FleetWatch(transport, fleet_check)
        self._waiting: dict[str, asyncio.Future[Message]] = {}
        self._address: str | None = None

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        settings: Settings | None = None,
        app: App | str | None = None,
        *,
        name: str | None = None,
    ) -> AsyncIterator[Client]:
        """A started client of the fleet the settings name, closed on exit.

        ``settings`` (default: :func:`~pachyderm.load_settings`, from the
        environment) give the broker, the namespace, the partition count and
        the call timeout, and the client's in-flight limit and wait
        (``PACHYDERM_CLIENT_MAX_IN_FLIGHT``, ``PACHYDERM_CLIENT_WAIT``). ``app`` (an
        :class:`App`, or ``module:attribute``) encodes typed commands; without it
        only ``call_named`` and ``request`` work. ``name`` labels the broker connection.
        """
        settings = settings or load_settings()
        transport = transports.RabbitMQTransport(
            settings.amqp_url.get_secret_value(),
            topology_of(settings),
            connection_name=name or f"client-{socket.gethostname()}-{os.getpid()}",
        )
        typed = load_app(app) if isinstance(app, str) else app
        client = cls(typed, transport, **client_options(settings))
        await transport.start()
        try:
            await client.start()
            yield client
        finally:
            await client.close()

    async def start(self) -> None:
        """Start listening for replies (the transport must be started)."""
        self._address = await self.transport.listen_replies(self._on_reply)

    async def close(self) -> None:
        """Stop answering calls and close the transport. A call still waiting raises
        :class:`~pachyderm.CallTimeoutError`: its command may yet apply."""
        self._address = None
        for waiting in self._waiting.values():
            if not waiting.done():
                waiting.set_exception(CallTimeoutError("the client closed before the reply came"))
        await self.transport.close()

    async def _on_reply(self, message: Message) -> None:
        waiting = self._waiting.pop(message.correlation_id or "", None)
        if waiting is not None and not waiting.done():
            waiting.set_result(message)

    async def call(
        self,
        ref: Ref,
        command: Any,
        *,
        timeout: float | None = None,
        command_id: str | None = None,
        sent_at: datetime | None = None,
    ) -> Any:
        """Apply ``command`` to ``ref`` and return the reply. ``sent_at`` (aware): the
        command's sent time when not now, e.g. a retry's first send, so the command
        window counts from that (see the class's note)."""
        message = command_message(self._typed(), ref, command, command_id=command_id)
        return (await self._request(with_sent_at(message, sent_at), timeout)).reply

    async def call_named(
        self,
        ref: Ref,
        name: str,
        data: Any,
        *,
        kind: str = COMMAND,
        timeout: float | None = None,
        command_id: str | None = None,
        sent_at: datetime | None = None,
    ) -> Any:
        """Like :meth:`call` for a command (or query) given by name and plain data,
        without the entity's Python classes: returns the reply."""
        answer = await self.request(
            ref, name, data, kind=kind, timeout=timeout, command_id=command_id, sent_at=sent_at
        )
        return answer.reply

    async def request(
        self,
        ref: Ref,
        name: str,
        data: Any,
        *,
        kind: str = COMMAND,
        timeout: float | None = None,
        command_id: str | None = None,
        sent_at: datetime | None = None,
    ) -> Answer:
        """Like :meth:`call_named`, returning the reply with the entity's version after
        it (a query with the name ``""`` answers the state)."""
        message = named_message(ref, name, data, command_id=command_id, kind=kind)
        return await self._request(with_sent_at(message, sent_at), timeout)

    def _typed(self) -> App:
        if self.app is None:
            raise PachydermError("typed commands need the client to know the App")
        return self.app

    async def query(self, ref: Ref, query: Any = None, *, timeout: float | None = None) -> Any:
        """Ask ``ref`` a read-only question (``None``: its state); writes nothing."""
        message = command_message(self._typed(), ref, query, kind=QUERY)
        return (await self._request(message, timeout)).reply

    async def send(
        self,
        ref: Ref,
        command: Any,
        *,
        command_id: str | None = None,
        sent_at: datetime | None = None,
    ) -> str:
        """Publish ``command`` without waiting for it to apply; returns its command id.

        Returns once the broker has confirmed the message. ``sent_at``: as for :meth:`call`.
        """
        message = command_message(self._typed(), ref, command, command_id=command_id)
        message = with_sent_at(message, sent_at)
        async with self.in_flight.place():
            await self._publish(message)
        assert message.message_id is not None
        return message.message_id

    async def _publish(self, message: Message) -> None:
        exchange = self.transport.topology.commands_exchange
        with publishing(exchange, stamped(message)) as traced:
            await self.transport.publish_command(traced)

    async def _request(self, message: Message, timeout: float | None) -> Answer:
        if self._address is None:
            raise PachydermError(
                "the client is not started (or closed): use `async with Client.connect(...)`"
            )
        if self.fleet is not None:
            await self.fleet.check()
        async with self.in_flight.place():
            return await self._round_trip(message, timeout)

    async def _round_trip(self, message: Message, timeout: float | None) -> Answer:
        correlation_id = str(uuid.uuid4())
        waiting: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = waiting
        try:
            await self._publish(
                replace(message, reply_to=self._address, correlation_id=correlation_id)
            )
            reply = await asyncio.wait_for(waiting, timeout or self.timeout)
        except TimeoutError:
            raise CallTimeoutError(
                f"no reply from {message.headers.get('pachyderm-entity-type')}/"
                f"{message.routing_key} within {timeout or self.timeout}s "
                f"(command id {message.message_id})"
            ) from None
        finally:
            self._waiting.pop(correlation_id, None)
        return Answer(*read_reply(reply))
