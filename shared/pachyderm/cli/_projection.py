"""``pachyderm projection status|pause|resume|rebuild [NAME]``: look at and steer projections.

These only write the cursors' flags: the running projection processes obey
them at their next batch (pause, resume) or clear and reset the projection
(rebuild: the first runner to see the flag clears the read model and resets all
its cursors in one transaction). Lag is in events (the log's head minus the
cursor) and in seconds (since the oldest event not yet applied was recorded).
"""

from __future__ import annotations

import argparse
import json

from .._errors import PachydermError
from .._loading import load_app
from .._settings import Settings
from ..projections import Cursor, CursorStore, Lag, lags, open_cursors
from ..store import open_store


async def steer(cursors: CursorStore, action: str, name: str) -> int:
    """Pause, resume or mark for a rebuild every cursor of ``name``; how many."""
    if action == "rebuild":
        return await cursors.request_rebuild(name)
    return await cursors.set_paused(name, action == "pause")


async def _known(settings: Settings, cursors: CursorStore, name: str) -> None:
    """Refuse a name that is neither the app's (if one is named) nor ever run."""
    if settings.app is not None:
        load_app(settings.app).projection(name)
        await cursors.ensure(name, settings.partitions)
    elif not await cursors.cursors(name):
        raise PachydermError(
            f"no projection {name!r} has run in namespace {settings.namespace!r};"
            " name the app (--app or PACHYDERM_APP) to steer one before it first runs"
        )


_HEADER = ("projection", "partition", "position", "head", "lag", "lag (s)", "state")


def _state(cursor: Cursor) -> str:
    return "rebuilding" if cursor.rebuilding else "paused" if cursor.paused else "running"


def _table(lags: list[Lag]) -> str:
    """The lags as aligned columns, a header first."""
    rows = [_HEADER] + [
        (
            lag.cursor.projection,
            str(lag.cursor.partition),
            str(lag.cursor.position),
            str(lag.head),
            str(lag.events),
            f"{lag.seconds:.3f}",
            _state(lag.cursor),
        )
        for lag in lags
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(_HEADER))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


async def projection_command(settings: Settings, arguments: argparse.Namespace) -> None:
    """``pachyderm projection ACTION [NAME]``."""
    action, name = arguments.action, arguments.name
    if action != "status" and not name:
        raise PachydermError(f"name the projection to {action}")
    database_url = settings.database_url.get_secret_value()
    cursors = await open_cursors(database_url, namespace=settings.namespace)
    try:
        if action != "status":
            await _known(settings, cursors, name)
            count = await steer(cursors, action, name)
            done = {"pause": "paused", "resume": "resumed", "rebuild": "marked for a rebuild"}
            print(f"projection {name} {done[action]} ({count} partitions)")
            return
        store = await open_store(
            database_url, namespace=settings.namespace, shards=settings.shard_map()
        )
        try:
            found = await lags(store, cursors, name)
        finally:
            await store.close()
    finally:
        await cursors.close()
    if arguments.json:
        print(json.dumps([lag.as_json() for lag in found], indent=2))
    else:
        print(_table(found) if found else "no projection has run yet")
