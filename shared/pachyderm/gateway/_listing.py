"""``GET /entities/{type}``: the entities of a type, a keyset page at a time.

Invariant: a page ends with the link to the next (``next``, and a ``Link``
header) whose ``after`` is the cursor of the page's last entity, in the page's
order: by id (a UUID) or by last change (``<updated_at>,<id>``). A cursor is
a position in the order, not an offset: entities added while a client pages
never shift its pages (:meth:`pachyderm.store.EventStore.list_entities`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from .._app import App
from .._errors import DefinitionError, UnknownNameError
from .._reference import check_type_name
from ..store import EventStore
from ..store._entity_cursor import Cursor, cursor_text, parse_cursor
from ..store._records import ListedEntity
from ._bodies import Entities, EntitySummary
from ._problems import Problem
from ._requests import DEFAULT_PAGE, MAX_PAGE

ORDERS = ("id", "change")
_SHAPES = ("an entity id", "<updated_at>,<id>")

# The query parameters as the OpenAPI document describes them (from the constants above).
PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "order",
        "in": "query",
        "description": "id: by entity id; change: by last change (then id), oldest first",
        "schema": {"type": "string", "enum": list(ORDERS), "default": ORDERS[0]},
    },
    {
        "name": "after",
        "in": "query",
        "description": "The cursor of the last entity seen (a next link's): an id by id,"
        " <updated_at>,<id> by change",
        "schema": {"type": "string"},
    },
    {
        "name": "limit",
        "in": "query",
        "description": "Entities per page",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE},
    },
]


def entity_type(request: Request, app: App | None) -> str:
    """The path's ``{type}``: a name a type could have (and with ``app``, one it has)."""
    name: str = request.path_params["type"]
    try:
        check_type_name(name)
    except DefinitionError:
        raise UnknownNameError(f"unknown entity type {name!r}") from None
    if app is not None:
        app.entity_type(name)
    return name


class EntityListing:
    """Lists the entities of a type from ``store``; with ``app``, only of its types."""

    def __init__(self, store: EventStore, app: App | None) -> None:
        self.store = store
        self.app = app

    async def list(self, request: Request) -> Response:
        """``GET /entities/{type}?order=id&after=...&limit=100``: a page and the next link."""
        name = entity_type(request, self.app)
        by_change, after, limit = _paging(request)
        # One more than asked tells whether there is a next page.
        found = await self.store.list_entities(
            name, after=after, limit=limit + 1, by_change=by_change
        )
        next_page = None
        if len(found) > limit:
            query = {
                "order": ORDERS[by_change],
                "after": cursor_text(found[limit - 1], by_change=by_change),
            }
            root = request.scope.get("root_path", "")
            next_page = f"{root}{request.url.path}?{urlencode(query | {'limit': limit})}"
        body = Entities(type=name, entities=[_summary(e) for e in found[:limit]], next=next_page)
        headers = {"Link": f'<{next_page}>; rel="next"'} if next_page else None
        return body.response(headers=headers)


def _paging(request: Request) -> tuple[bool, Cursor | None, int]:
    order = request.query_params.get("order", ORDERS[0])
    if order not in ORDERS:
        raise _invalid(f"order must be one of {', '.join(ORDERS)}")
    by_change = order == "change"
    text = request.query_params.get("limit", str(DEFAULT_PAGE))
    if not (text.isascii() and text.isdigit() and len(text) <= 4 and 1 <= int(text) <= MAX_PAGE):
        raise _invalid(f"limit must be an integer from 1 to {MAX_PAGE}")
    after = request.query_params.get("after")
    if after is None:
        return by_change, None, int(text)
    try:
        return by_change, parse_cursor(after, by_change=by_change), int(text)
    except ValueError:
        raise _invalid("after must be a next link's cursor: " + _SHAPES[by_change]) from None


def _summary(entity: ListedEntity) -> EntitySummary:
    return EntitySummary(id=entity.entity_id, version=entity.version, updated_at=entity.updated_at)


def _invalid(detail: str) -> Problem:
    return Problem(400, detail, kind="invalid-input")
