"""``pachyderm prune [--dry-run]``: delete the command ids, published effects and
quarantine leftovers (attempt counts, skipped commands) that outlived their window
now, as the worker owning partition 0 does every ``PACHYDERM_PRUNE_INTERVAL``
seconds, with the same settings and batches.

Safe beside running workers: a batch skips the rows another pruner holds.
"""

from __future__ import annotations

import argparse

from .._settings import Settings
from ..store import open_store
from ..worker import Pruner
from ._serve import prune_options


async def prune_command(settings: Settings, arguments: argparse.Namespace) -> None:
    options = prune_options(settings)
    store = await open_store(
        settings.database_url.get_secret_value(),
        namespace=settings.namespace,
        shards=settings.shard_map(),
    )
    try:
        pruner = Pruner(store, options)
        if arguments.dry_run:
            counts = await pruner.prunable()
            verb = "would prune"
        else:
            counts = await pruner.run()
            verb = "pruned"
    finally:
        await store.close()
    windows = options.retention()
    for what, count in counts.items():
        print(f"{verb} {count} {what} older than {windows[what]:g}s")
