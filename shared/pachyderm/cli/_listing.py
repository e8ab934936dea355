"""``pachyderm list TYPE``: the entities of a type, a keyset page at a time, from the store.

It reads the event store, as ``inspect`` does: listing is no message an entity
answers, so the AMQP client has no such call (the gateway's ``GET /entities/{type}``
reads the store too). A page ends with the cursor to go on from (``--after``).
"""

from __future__ import annotations

import argparse
import json

from .._loading import load_app
from .._settings import Settings
from ..store._entity_cursor import cursor_text, parse_cursor
from ..store._records import ListedEntity
from ._store import settings_store


async def list_command(settings: Settings, arguments: argparse.Namespace) -> None:
    if settings.app:  # a type the app does not have is a mistake worth a message
        load_app(settings.app).entity_type(arguments.type)
    by_change = arguments.by_change
    after = None if arguments.after is None else parse_cursor(arguments.after, by_change=by_change)
    async with settings_store(settings) as store:
        # One more than asked tells whether there is a next page.
        found = await store.list_entities(
            arguments.type, after=after, limit=arguments.limit + 1, by_change=by_change
        )
    page = found[: arguments.limit]
    more = cursor_text(page[-1], by_change=by_change) if len(found) > len(page) else None
    if arguments.json:
        print(
            json.dumps({"type": arguments.type, "entities": _plain(page), "next": more}, indent=2)
        )
        return
    for entity in page:
        when = entity.updated_at.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{arguments.type}/{entity.entity_id}  v{entity.version:<5} {when}")
    if not page:
        print(f"no {arguments.type} entities" + (" after that cursor" if after else ""))
    if more:
        order = " --by-change" if by_change else ""
        print(f"more: pachyderm list {arguments.type}{order} --after '{more}'")


def _plain(page: list[ListedEntity]) -> list[dict[str, object]]:
    return [
        {"id": str(e.entity_id), "version": e.version, "updated_at": e.updated_at.isoformat()}
        for e in page
    ]
