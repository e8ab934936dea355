"""The entity endpoints: commands, queries, state, history and pending timers; the
listing of a type's entities (``_listing``) and the following of one (``_following``).

Each answers with a model of ``_bodies``, the one the OpenAPI document gives
for it.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .._app import App
from .._client import Client
from .._errors import PachydermError
from .._reference import Ref
from .._scheduling import describe_timer
from .._wire import COMMAND, QUERY
from ..store import EventStore
from ._auth import Endpoint, Guard, Right
from ._bodies import History, Reply, State, Timer, Timers
from ._event_body import event_body
from ._following import DEFAULT_MAX_STREAMS, EntityFollowing, StreamSlots
from ._listing import EntityListing
from ._problems import answer_pachyderm_error
from ._request_tracing import traced_endpoint
from ._requests import command_id, entity_ref, json_object, page

COMMAND_ID_HEADER = "Pachyderm-Command-Id"

ENTITY = "/entities/{type}/{id}"
COMMANDS = ENTITY + "/commands/{command}"
QUERIES = ENTITY + "/queries/{query}"
HISTORY = ENTITY + "/history"
TIMERS = ENTITY + "/timers"
ENTITIES = "/entities/{type}"
EVENTS = ENTITY + "/events"


class EntityEndpoints:
    """Sends what requests ask to entities through ``client``; reads histories from ``store``.

    With ``app``, unknown entity types, commands and queries, and invalid
    fields, are answered at once, without a round trip to the workers.
    """

    def __init__(
        self,
        client: Client,
        store: EventStore | None,
        app: App | None,
        max_body: int,
        max_streams: int = DEFAULT_MAX_STREAMS,
    ) -> None:
        self.client = client
        self.store = store
        self.app = app
        self.max_body = max_body
        self.slots = StreamSlots(max_streams)

    def routes(self, guard: Guard) -> list[Route]:
        """The routes, each behind ``guard`` with the right it needs (history, timers, the
        listing and following need a store)."""
        routes = [
            _route("POST", COMMANDS, guard.protect(self.command, Right.CALL)),
            _route("POST", QUERIES, guard.protect(self.query, Right.READ)),
            _route("GET", ENTITY, guard.protect(self.state, Right.READ)),
        ]
        if self.store is not None:
            routes.append(_route("GET", HISTORY, guard.protect(self.history, Right.READ)))
            routes.append(_route("GET", TIMERS, guard.protect(self.timers, Right.READ)))
            listing = EntityListing(self.store, self.app)
            routes.append(_route("GET", ENTITIES, guard.protect(listing.list, Right.READ)))
            following = EntityFollowing(self.store, self.app, self.slots)
            routes.append(_route("GET", EVENTS, guard.protect(following.follow, Right.READ)))
        return routes

    async def command(self, request: Request) -> Response:
        """``POST /entities/{type}/{id}/commands/{command}``: ``{"version", "reply"}``."""
        ref, name = entity_ref(request), request.path_params["command"]
        identifier = command_id(request)
        data = await json_object(request, self.max_body)
        self._check_message(ref, COMMAND, name, data)
        headers = {COMMAND_ID_HEADER: identifier}
        try:
            version, reply = await self.client.request(ref, name, data, command_id=identifier)
        except PachydermError as error:
            # The id goes back with every outcome: after a timeout it is what to retry with.
            return await answer_pachyderm_error(request, error, headers)
        return Reply(version=version, reply=reply).response(headers=headers)

    async def query(self, request: Request) -> Response:
        """``POST /entities/{type}/{id}/queries/{query}``: ``{"version", "reply"}``."""
        ref, name = entity_ref(request), request.path_params["query"]
        data = await json_object(request, self.max_body)
        self._check_message(ref, QUERY, name, data)
        version, reply = await self.client.request(ref, name, data, kind=QUERY)
        return Reply(version=version, reply=reply).response()

    async def state(self, request: Request) -> Response:
        """``GET /entities/{type}/{id}``: ``{"type", "id", "version", "state"}``."""
        ref = entity_ref(request)
        self._check_type(ref)
        version, state = await self.client.request(ref, "", None, kind=QUERY)
        return State(type=ref.type, id=ref.id, version=version, state=state).response()

    async def history(self, request: Request) -> Response:
        """``GET /entities/{type}/{id}/history?from=1&limit=100``: a page of events, oldest
        first, and the link to the next page (``null`` on the last)."""
        assert self.store is not None  # routed only with a store
        ref = entity_ref(request)
        self._check_type(ref)
        first, limit = page(request)
        # One more than asked tells whether there is a next page.
        events = await self.store.history(ref.id, first, limit + 1)
        if events:
            # The store files events by id alone: loading checks that the id is of this
            # type (it reads the latest snapshot and the events after it).
            await self.store.load(ref)
        next_page = None
        if len(events) > limit:
            path = HISTORY.format(type=ref.type, id=ref.id)
            root = request.scope.get("root_path", "")
            next_page = f"{root}{path}?from={events[limit].version}&limit={limit}"
        body = History(
            type=ref.type,
            id=ref.id,
            events=[event_body(event) for event in events[:limit]],
            next=next_page,
        )
        headers = {"Link": f'<{next_page}>; rel="next"'} if next_page else None
        return body.response(headers=headers)

    async def timers(self, request: Request) -> Response:
        """``GET /entities/{type}/{id}/timers``: the entity's pending timers, soonest first."""
        assert self.store is not None  # routed only with a store
        ref = entity_ref(request)
        self._check_type(ref)
        timers = await self.store.entity_timers(ref.id)
        if timers:
            await self.store.load(ref)  # the id is of this type (timers are filed by id)
        found = [Timer(**describe_timer(timer)) for timer in timers]
        return Timers(type=ref.type, id=ref.id, timers=found).response()

    def _check_type(self, ref: Ref) -> None:
        """With the app: an unknown entity type is answered here."""
        if self.app is not None:
            self.app.entity_type(ref.type)

    def _check_message(self, ref: Ref, kind: str, name: str, data: Any) -> None:
        """With the app: what the workers would answer to an unknown name or bad fields."""
        if self.app is not None:
            entity_type = self.app.entity_type(ref.type)
            types = entity_type.commands if kind == COMMAND else entity_type.queries
            types.load(name, data)


def _route(method: str, path: str, endpoint: Endpoint) -> Route:
    """``endpoint`` at ``path`` for ``method``, traced (authentication included)."""
    return Route(path, traced_endpoint(method, path, endpoint), methods=[method])
