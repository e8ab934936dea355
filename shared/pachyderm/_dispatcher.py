"""Deliver effects to external handlers: ``dispatch(payload, config)``."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from . import _codec
from ._effects import EffectHandler
from ._errors import UnknownNameError
from .telemetry._messaging import consuming
from .transport import Message, Transport

log = logging.getLogger("pachyderm.effects")


class EffectDispatcher:
    """Consumes the effects addressed to ``handlers`` and dispatches each.

    Effects arrive at least once: a handler that must not act twice should
    remember the ``message_id`` (the stable effect id) of what it has done.
    A handler that raises gets its effect dead-lettered, not retried in a loop.
    """

    def __init__(
        self,
        transport: Transport,
        handlers: Sequence[EffectHandler],
        config: Mapping[str, Any] | None = None,
        *,
        group: str = "handlers",
    ) -> None:
        self.transport = transport
        self.handlers = {handler.name: handler for handler in handlers}
        self.config = dict(config or {})
        self.group = group

    async def start(self) -> None:
        keys = [f"effect.{name}" for name in sorted(self.handlers)]
        await self.transport.consume_effects(self.group, keys, self.dispatch)

    async def dispatch(self, message: Message) -> None:
        with consuming(self.transport.topology.effects_exchange, message, group=self.group):
            handler = self.handlers.get(message.routing_key.removeprefix("effect."))
            if handler is None:
                raise UnknownNameError(f"no handler for effect {message.routing_key!r}")
            payload = _codec.decode(message.body, message.content_type)
            outcome = handler.dispatch(payload, self.config)
            if inspect.isawaitable(outcome):
                await outcome
            log.debug("dispatched effect %s to %s", message.message_id, handler.name)
