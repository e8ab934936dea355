"""Apply commands to entities: load, decide, commit with the version check, retry.

This is the core every runtime shares (embedded mode, the worker fleet):
it keeps hot entity state in memory with its version, commits through the
store, and on a conflict (another process moved the entity on) reloads and
decides again on fresh state.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import _codec
from ._app import App
from ._entity import Reject
from ._errors import HandlerError, StoreError, UnknownNameError
from ._execution import DEFAULT_SNAPSHOT_EVERY, execute
from ._reference import Ref
from .store import Committed, Conflict, Duplicate, EventStore, OutboxEntry

log = logging.getLogger("pachyderm.processor")

DEFAULT_MAX_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Result:
    """What a caller learns about its command: a reply, or a rejection."""

    version: int
    reply: Any = None
    rejection: Reject | None = None
    duplicate: bool = False


@dataclass(slots=True)
class _Hot:
    state: Any
    version: int


class Processor:
    """Runs commands for the entities of ``app`` against ``store``."""

    def __init__(
        self,
        app: App,
        store: EventStore,
        *,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self.app = app
        self.store = store
        self.snapshot_every = snapshot_every
        self.max_attempts = max_attempts
        self._hot: dict[Ref, _Hot] = {}

    async def _current(self, ref: Ref) -> _Hot:
        hot = self._hot.get(ref)
        if hot is None:
            loaded = await self.store.load(ref)
            hot = _Hot(self.app.entity_type(ref.type).replay(loaded), loaded.version)
            self._hot[ref] = hot
        return hot

    async def process(self, ref: Ref, command: Any, command_id: str) -> Result:
        """Apply ``command`` once: a repeated ``command_id`` gets the stored reply."""
        entity_type = self.app.entity_type(ref.type)
        for _ in range(self.max_attempts):
            hot = await self._current(ref)
            execution = execute(
                entity_type,
                ref,
                hot.state,
                hot.version,
                command,
                command_id=command_id,
                snapshot_every=self.snapshot_every,
            )
            if execution.change is None:
                return Result(hot.version, execution.reply, execution.rejection)
            [outcome] = await self.store.commit([execution.change])
            match outcome:
                case Committed(version=version):
                    self._hot[ref] = _Hot(execution.state, version)
                    return Result(version, execution.reply)
                case Duplicate(reply=reply, version=version):
                    return Result(version, _codec.decode(reply), duplicate=True)
                case Conflict():
                    self._hot.pop(ref, None)
        raise StoreError(f"{ref}: still conflicting after {self.max_attempts} attempts")

    async def drain_outbox(self, config: Mapping[str, Any] | None = None) -> int:
        """Deliver pending effects in-process: commands to entities, effects to handlers.

        Returns how many were delivered. Each entity command gets an id derived
        from its effect id, so delivering an effect twice applies it once.
        """
        delivered = 0
        while batch := await self.store.pending_effects():
            for entry in batch:
                await self._deliver(entry, config or {})
            await self.store.mark_published([entry.effect_id for entry in batch])
            delivered += len(batch)
        return delivered

    async def _deliver(self, entry: OutboxEntry, config: Mapping[str, Any]) -> None:
        body = _codec.decode(entry.payload)
        if entry.destination.startswith("command."):
            target = Ref.parse(body["entity_type"], body["entity_id"])
            command = self.app.entity_type(target.type).commands.load(body["command"], body["data"])
            await self.process(target, command, f"effect:{entry.effect_id}")
            return
        try:
            handler = self.app.effect_handler(body["handler"])
        except UnknownNameError:
            log.warning("no handler for effect %s to %s", entry.effect_id, body["handler"])
            return
        try:
            outcome = handler.dispatch(body["payload"], config)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception as error:
            raise HandlerError(f"effect handler {handler.name} raised {error!r}") from error
