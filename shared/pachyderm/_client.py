"""Calling entities: request and reply over the transport (RPC over AMQP)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

from ._app import App
from ._errors import CallTimeoutError, PachydermError
from ._reference import Ref
from ._wire import COMMAND, QUERY, command_message, named_message, read_reply
from .telemetry._messaging import publishing
from .transport import Message, Transport

DEFAULT_TIMEOUT = 10.0


class Client:
    """Sends commands and queries to entities and waits for their replies.

    ``call`` returns the reply (the entity's new state unless its ``handle``
    chose another) or raises :class:`~pachyderm.RejectedError`,
    :class:`~pachyderm.InvalidInputError`, :class:`~pachyderm.HandlerError` or
    :class:`~pachyderm.CallTimeoutError`. Retrying a call with the same
    ``command_id`` is safe: the command applies once and the retry gets the
    stored reply.
    """

    def __init__(
        self, app: App | None, transport: Transport, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.app = app
        self.transport = transport
        self.timeout = timeout
        self._waiting: dict[str, asyncio.Future[Message]] = {}
        self._address: str | None = None

    async def start(self) -> None:
        """Start listening for replies (the transport must be started)."""
        self._address = await self.transport.listen_replies(self._on_reply)

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
    ) -> Any:
        """Apply ``command`` to ``ref`` and return the reply."""
        message = command_message(self._typed(), ref, command, command_id=command_id)
        return (await self._request(message, timeout))[1]

    async def call_named(
        self,
        ref: Ref,
        name: str,
        data: Any,
        *,
        kind: str = COMMAND,
        timeout: float | None = None,
        command_id: str | None = None,
    ) -> tuple[int, Any]:
        """Like :meth:`call` for a command (or query) given by name and plain data,
        without the entity's Python classes; returns ``(version, reply)``."""
        message = named_message(ref, name, data, command_id=command_id, kind=kind)
        return await self._request(message, timeout)

    def _typed(self) -> App:
        if self.app is None:
            raise PachydermError("typed commands need the client to know the App")
        return self.app

    async def query(self, ref: Ref, query: Any = None, *, timeout: float | None = None) -> Any:
        """Ask ``ref`` a read-only question (``None``: its state); writes nothing."""
        message = command_message(self._typed(), ref, query, kind=QUERY)
        return (await self._request(message, timeout))[1]

    async def send(self, ref: Ref, command: Any, *, command_id: str | None = None) -> str:
        """Publish ``command`` without waiting for it to apply; returns its command id.

        Returns once the broker has confirmed the message.
        """
        message = command_message(self._typed(), ref, command, command_id=command_id)
        await self._publish(message)
        assert message.message_id is not None
        return message.message_id

    async def _publish(self, message: Message) -> None:
        with publishing(self.transport.topology.commands_exchange, message) as traced:
            await self.transport.publish_command(traced)

    async def _request(self, message: Message, timeout: float | None) -> tuple[int, Any]:
        if self._address is None:
            raise PachydermError("the client is not started: await client.start() first")
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
        return read_reply(reply)
