"""Telling a partition's own calls from the worker's others (its broker probe publishes
replies too), for transports that fail or hang on purpose."""

from __future__ import annotations

import asyncio


def in_a_partition() -> bool:
    """Whether the running task is a partition's (``PartitionWorker`` names it so)."""
    task = asyncio.current_task()
    return task is not None and task.get_name().startswith("partition-")
