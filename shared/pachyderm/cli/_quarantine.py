"""``pachyderm quarantine list|show|resume|skip``: the poison commands set aside, and the
operator's decisions on them (see :mod:`pachyderm._quarantine_admin`).

Safe beside running workers: a decision moves one row; the partition's owner
carries it out.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket

from .. import _quarantine_admin as admin
from .._errors import PachydermError
from .._settings import Settings
from ..store import open_store

_COLUMNS = ("entity_id", "command_id", "entity_type", "status", "policy", "attempts", "parked")


def _actor() -> str:
    """Who runs this command, as the audit line names them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} (pachyderm quarantine)"


async def quarantine_command(settings: Settings, arguments: argparse.Namespace) -> int:
    store = await open_store(
        settings.database_url.get_secret_value(),
        namespace=settings.namespace,
        shards=settings.shard_map(),
    )
    try:
        if arguments.action == "list":
            rows = [admin.describe(row) for row in await admin.listing(store)]
            _print_rows(rows, as_json=arguments.json)
            return 0
        if arguments.entity_id is None or arguments.command_id is None:
            raise PachydermError(f"quarantine {arguments.action} needs ENTITY_ID COMMAND_ID")
        entity = admin.entity_id(arguments.entity_id)
        if arguments.action == "show":
            row = await admin.find(store, entity, arguments.command_id)
            print(json.dumps(admin.describe(row, command=True), indent=2, default=str))
            return 0
        decided = await admin.decide(
            store, entity, arguments.command_id, arguments.action, actor=_actor()
        )
        print(json.dumps(admin.describe(decided)))
        return 0
    finally:
        await store.close()


def _print_rows(rows: list[dict[str, object]], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows))
        return
    if not rows:
        print("no quarantined commands")
        return
    print("\t".join(_COLUMNS))
    for row in rows:
        print("\t".join(str(row[column]) for column in _COLUMNS))
