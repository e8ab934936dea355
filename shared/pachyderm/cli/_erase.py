"""``pachyderm erase TYPE ID [--key] [--yes]``: delete an entity's history for good and
leave its tombstone (see :mod:`pachyderm._erasure`); ``pachyderm prune-ended``: delete
the histories of ended entities before their final snapshot, when
``PACHYDERM_ENDED_HISTORY`` is ``prune``.

Both are safe beside running workers: an erasure takes the entity's row lock,
which every commit to it takes; pruning skips rows another transaction holds.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
from dataclasses import asdict

from .. import _erasure
from .._errors import PachydermError
from .._settings import Settings
from ._inspect import entity_ref
from ._store import settings_store


def _actor() -> str:
    """Who runs this command, as the audit line names them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} (pachyderm erase)"


def _confirmed(arguments: argparse.Namespace, what: str) -> bool:
    if arguments.yes:
        return True
    if not sys.stdin.isatty():
        raise PachydermError(f"erasing {what} cannot be undone: pass --yes to confirm")
    answer = input(f"Erase {what} for good (its history cannot be recovered)? [y/N] ")
    return answer.strip().lower() in {"y", "yes"}


async def erase_command(settings: Settings, arguments: argparse.Namespace) -> int:
    ref = entity_ref(arguments)
    if not _confirmed(arguments, str(ref)):
        print("nothing erased", file=sys.stderr)
        return 1
    async with settings_store(settings) as store:
        erasure = await _erasure.erase(store, ref, actor=_actor())
    found = asdict(erasure) | {"entity_id": str(erasure.entity_id)}
    print(json.dumps(found))
    return 0


async def prune_ended_command(settings: Settings, arguments: argparse.Namespace) -> None:
    async with settings_store(settings) as store:
        if arguments.dry_run:
            print(f"would prune {await store.count_prunable_ended()} events of ended entities")
            return
        if settings.ended_history != "prune":
            raise PachydermError(
                "PACHYDERM_ENDED_HISTORY is 'keep': the histories of ended entities are kept"
                " (set it to 'prune' to delete them before their final snapshot)"
            )
        pruned = 0
        while (batch := await store.prune_ended(arguments.batch)) > 0:
            pruned += batch
            if batch < arguments.batch:
                break
    print(f"pruned {pruned} events of ended entities")
