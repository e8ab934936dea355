"""``GET /entities/{type}/{id}/events?from=N``: follow one entity live, as Server-Sent Events.

Invariants:

- The stream sends the entity's events from version ``from`` (or, on a
  reconnect, from the version after ``Last-Event-ID``) in version order, each
  once, as ``event: <name>``, ``id: <version>`` and ``data:`` the event as
  JSON; then each new one as it commits. Versions are gap-free, so resuming
  after the last id received misses nothing and repeats nothing.
- New events are found by polling the store's history: every 50 ms after an
  event, the interval doubling to 1 s while the entity is idle. No busy loop.
  (The log's wake-ups, :meth:`~pachyderm.store.EventStore.log_wakeups`, are per
  partition, and the gateway cannot tell an entity's partition: the broker's
  consistent hash picks it; waking every stream on every commit would read
  more than polling does.)
- At most ``max_streams`` streams are open at once (each holds a poller); one
  more is answered 503. A stream's slot is given back when its response ends,
  whatever ends it: the client disconnecting (starlette then cancels the
  stream), a store failure (the stream ends; the client reconnects with
  ``Last-Event-ID``), or the server stopping.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from .._app import App
from .._errors import PachydermError
from .._reference import Ref
from ..store import EventStore, RecordedEvent
from ._event_body import event_body
from ._problems import Problem
from ._requests import MAX_VERSION, entity_ref

log = logging.getLogger("pachyderm.gateway")

EVENT_STREAM = "text/event-stream"
LAST_EVENT_ID = "Last-Event-ID"
DEFAULT_MAX_STREAMS = 100
FIRST_POLL, LAST_POLL = 0.05, 1.0  # seconds between reads: after an event, and at most
KEEP_ALIVE = 15.0  # seconds of silence before a comment keeps proxies from closing
BATCH = 100  # events read at once
RETRY_MS = 1000  # what the client waits before reconnecting (the SSE "retry" field)

# The parameters as the OpenAPI document describes them.
PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "from",
        "in": "query",
        "description": "The first version to send",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_VERSION, "default": 1},
    },
    {
        "name": LAST_EVENT_ID,
        "in": "header",
        "description": "On a reconnect, the last id (version) received: the stream resumes"
        " after it, whatever from says",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_VERSION},
    },
]


class StreamSlots:
    """How many streams may be open at once, and how many are."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("max_streams must be at least 1")
        self.limit = limit
        self.open = 0

    def take(self) -> None:
        if self.open >= self.limit:
            raise Problem(
                503,
                f"{self.limit} event streams are open, as many as this gateway serves; retry later",
                kind="unavailable",
                headers={"Retry-After": "1"},
            )
        self.open += 1

    def give_back(self) -> None:
        self.open -= 1


class _EventStream(StreamingResponse):
    """A stream that gives its slot back when its response ends, however it ends."""

    def __init__(self, events: AsyncIterator[str], slots: StreamSlots) -> None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(events, media_type=EVENT_STREAM, headers=headers)
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Waits for the client's disconnect itself, whatever ASGI version the server
        # speaks (starlette leaves that to failed writes from 2.4 on): an idle stream
        # writes nothing for seconds, and must not hold its slot that long.
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            self.slots.give_back()


class EntityFollowing:
    """Streams the events of an entity from ``store``; with ``app``, only of its types."""

    def __init__(self, store: EventStore, app: App | None, slots: StreamSlots) -> None:
        self.store = store
        self.app = app
        self.slots = slots

    async def follow(self, request: Request) -> Response:
        """``GET /entities/{type}/{id}/events?from=1``: the events, then each new one."""
        ref = entity_ref(request)
        if self.app is not None:
            self.app.entity_type(ref.type)
        first = _first_version(request)
        # The store files events by id alone: loading checks the id is of this type.
        written = (await self.store.load(ref)).version > 0
        self.slots.take()
        try:
            return _EventStream(self._events(ref, first, written), self.slots)
        except BaseException:
            self.slots.give_back()
            raise

    async def _events(self, ref: Ref, version: int, checked: bool) -> AsyncIterator[str]:
        yield f"retry: {RETRY_MS}\n\n"
        delay, silent = FIRST_POLL, 0.0
        while True:
            try:
                events = await self.store.history(ref.id, version, BATCH)
                if events and not checked:  # written since: of this type?
                    await self.store.load(ref)
                    checked = True
            except PachydermError as error:
                # The answer has begun: no problem document can follow. The client
                # reconnects (after RETRY_MS) with Last-Event-ID and misses nothing.
                log.warning("event stream of %s ended: %s", ref, error)
                return
            for event in events:
                yield _message(event)
            if events:
                version, delay, silent = events[-1].version + 1, FIRST_POLL, 0.0
                if len(events) == BATCH:
                    continue  # more waiting: read on at once
            elif silent >= KEEP_ALIVE:
                yield ": keep-alive\n\n"
                silent = 0.0
            await asyncio.sleep(delay)
            silent += delay
            delay = min(delay * 2, LAST_POLL) if not events else delay


def _first_version(request: Request) -> int:
    """After ``Last-Event-ID`` when given (a reconnect), else ``from`` (default 1)."""
    last = request.headers.get(LAST_EVENT_ID)
    if last is not None:
        return _version(last, LAST_EVENT_ID, 0) + 1
    text = request.query_params.get("from")
    return 1 if text is None else _version(text, "from", 1)


def _version(text: str, name: str, minimum: int) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 18 and int(text) >= minimum):
        raise Problem(
            400, f"{name} must be an integer from {minimum} to {MAX_VERSION}", kind="invalid-input"
        )
    return int(text)


def _message(event: RecordedEvent) -> str:
    """One SSE message: JSON has no raw newline, so ``data`` is one line."""
    data = json.dumps(event_body(event).model_dump(mode="json"), separators=(",", ":"))
    name = event.name.replace("\n", " ").replace("\r", " ")
    return f"event: {name}\nid: {event.version}\ndata: {data}\n\n"
