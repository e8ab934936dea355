"""``pachyderm prune [--dry-run]``: delete the command ids, published effects and
quarantine leftovers (attempt counts, skipped commands) that outlived their window
now, as the worker owning partition 0 does every ``PACHYDERM_PRUNE_INTERVAL``
seconds, with the same settings and batches.

Safe beside running workers: a batch skips the rows another pruner holds.
"""

from __future__ import annotations

import argparse

from .._settings import Settings
from ..worker import Pruner
from ._serve import prune_options
from ._store import settings_store


async def prune_command(settings: Settings, arguments: argparse.Namespace) -> None:
    options = prune_options(settings)
    async with settings_store(settings) as store:
        pruner = Pruner(store, options)
        if arguments.dry_run:
            counts = await pruner.prunable()
            verb = "would prune"
        else:
            counts = await pruner.run()
            verb = "pruned"
    windows = options.retention()
    for what, count in counts.items():
        print(f"{verb} {count} {what} older than {windows[what]:g}s")
