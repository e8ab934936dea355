"""Open the cursor store of the database a URL names (only that backend is imported)."""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from ._cursors import CursorStore
from ._sqlite_cursors import SqliteCursors


async def open_cursors(url: str, *, namespace: str = "pachyderm") -> CursorStore:
    """The cursors of ``postgresql://...`` (schema ``namespace``) or ``sqlite:///path``; the
    schema must be migrated (``pachyderm migrate``)."""
    scheme = urlsplit(url).scheme
    if scheme in {"postgresql", "postgres"}:
        module = importlib.import_module("._postgres_cursors", __package__)
        cursors: CursorStore = await module.PostgresCursors.connect(url, schema=namespace)
        return cursors
    if scheme == "sqlite":
        return await SqliteCursors.open(url.removeprefix("sqlite://").removeprefix("/"))
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use postgresql:// or sqlite:///")
