"""Deliver effects to external handlers: ``dispatch(payload, config)``.

Inside ``dispatch``, :func:`~pachyderm.current_effect` tells the handler which
effect it carries out: its stable id and which delivery this is. An effect
without an id is refused (dead-lettered): a handler could not tell it apart.

A dispatcher binds its group's queue for its handlers, then routes again the
effects that were published while no queue was bound for them (a handler
deployed to workers before its dispatchers), at start and every
``reroute_interval`` seconds after: an effect waits for its handler, and is
neither lost nor in the way of others meanwhile.

A handler that raises is tried again with exponential backoff and jitter, up to
``retry.attempts`` tries in all (see :mod:`._effect_retries`); then the effect is
dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from . import _codec
from ._context import EffectContext, dispatching
from ._effect_retries import EffectRetry, retrying
from ._effects import EffectHandler
from ._errors import InvalidInputError, PachydermError, UnknownNameError
from ._wire import EFFECT_ID_HEADER, SOURCE_COMMAND_HEADER, SOURCE_ENTITY_HEADER
from .telemetry._gauges import observing_unrouted
from .telemetry._messaging import consuming
from .telemetry._telemetry import instruments
from .transport import Message, RoutedAgain, Transport

log = logging.getLogger("pachyderm.effects")

DEFAULT_REROUTE_INTERVAL = 30.0

# Set by RabbitMQ's quorum queues: how often the message was delivered before
# (0 or absent the first time, whether or not the broker sets it then).
DELIVERY_COUNT_HEADER = "x-delivery-count"


class EffectDispatcher:
    """Consumes the effects addressed to ``handlers`` and dispatches each.

    Effects arrive at least once: a handler that must not act twice should
    remember the ``current_effect().effect_id`` (the stable effect id, also the
    message's ``message_id``) of what it has done.
    A handler that raises is tried again after a growing, jittered wait, up to
    ``retry.attempts`` tries; then its effect is dead-lettered.
    """

    def __init__(
        self,
        transport: Transport,
        handlers: Sequence[EffectHandler],
        config: Mapping[str, Any] | None = None,
        *,
        group: str = "handlers",
        reroute_interval: float = DEFAULT_REROUTE_INTERVAL,
        retry: EffectRetry | None = None,
    ) -> None:
        self.transport = transport
        self.handlers = {handler.name: handler for handler in handlers}
        self.config = dict(config or {})
        self.group = group
        self.reroute_interval = reroute_interval
        self.retry = retry or EffectRetry()
        self._waiting = 0
        self._rerouting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Consume the group's effects, route the waiting ones, and keep doing that."""
        keys = [f"effect.{name}" for name in sorted(self.handlers)]
        await self.transport.consume_effects(self.group, keys, self.dispatch)
        await self.route_waiting()
        self._rerouting = asyncio.create_task(self._route_waiting_forever())

    async def stop(self) -> None:
        """Stop routing waiting effects (consuming stops with the transport)."""
        if self._rerouting is not None:
            self._rerouting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rerouting

    async def route_waiting(self) -> RoutedAgain:
        """One pass over the effects no group's queue was bound for when published."""
        routed = await self.transport.route_waiting_effects()
        self._waiting = routed.waiting
        # Those taken and not back in the queue found one (others may have arrived).
        if (delivered := routed.taken - routed.waiting) > 0:
            instruments().effects_routed_again.add(delivered)
            log.info("published again %d effects that had waited for a handler's queue", delivered)
        if routed.waiting:
            log.warning(
                "%d effects wait in %s: no effect group's queue is bound for them (is a"
                " dispatcher with their handlers running?)",
                routed.waiting,
                self.transport.topology.unrouted_effects_queue,
            )
        return routed

    async def _route_waiting_forever(self) -> None:
        with observing_unrouted(lambda: self._waiting):
            while True:
                await asyncio.sleep(self.reroute_interval)
                try:
                    await self.route_waiting()
                except PachydermError as error:
                    log.warning("routing waiting effects again failed, retrying: %s", error)
                except Exception:
                    # Whatever it was, effects that wait must not wait for good.
                    log.exception("routing waiting effects again failed, retrying")

    async def dispatch(self, message: Message) -> None:
        """Dispatch one effect to its handler, trying again while it fails; what still
        raises is dead-lettered by the transport (and counted here)."""
        try:
            await self._dispatch(message)
        except Exception:
            handler = message.routing_key.removeprefix("effect.")
            instruments().effects_dead_lettered.add(1, {"handler": handler})
            raise

    async def _dispatch(self, message: Message) -> None:
        with consuming(self.transport.topology.effects_exchange, message, group=self.group):
            handler = self.handlers.get(message.routing_key.removeprefix("effect."))
            if handler is None:
                raise UnknownNameError(f"no handler for effect {message.routing_key!r}")
            effect = effect_context(message, handler.name)
            payload = _codec.decode(message.body, message.content_type)

            async def once() -> None:
                with dispatching(effect):
                    outcome = handler.dispatch(payload, self.config)
                    if inspect.isawaitable(outcome):
                        await outcome

            await retrying(self.retry, effect.effect_id, handler.name, once)
            log.debug("dispatched effect %s to %s", message.message_id, handler.name)


def effect_context(message: Message, handler: str) -> EffectContext:
    """What a handler is told about the effect ``message`` carries."""
    headers = message.headers or {}
    effect_id = message.message_id or headers.get(EFFECT_ID_HEADER)
    if not isinstance(effect_id, str) or not effect_id:
        raise InvalidInputError("an effect needs a message_id: it is the effect id")
    return EffectContext(
        effect_id=effect_id,
        attempt=_attempt(headers.get(DELIVERY_COUNT_HEADER)),
        handler=handler,
        source_entity_id=_text(headers.get(SOURCE_ENTITY_HEADER)),
        source_command_id=_text(headers.get(SOURCE_COMMAND_HEADER)),
    )


def _attempt(delivery_count: object) -> int:
    # Anything but a count the broker could have set reads as a first delivery.
    if isinstance(delivery_count, bool) or not isinstance(delivery_count, int):
        return 1
    return max(delivery_count, 0) + 1


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
