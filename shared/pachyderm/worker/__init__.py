"""The worker: serves partitions of commands against the event store."""

from .._hooks import BatchHooks, Hooks, WorkerHooks
from ._cache import EntityCache
from ._engine import Done, Engine
from ._outbox import EffectPublisher
from ._partition import PartitionWorker
from ._pruning import PruneOptions, Pruner
from ._quarantine import QuarantineOptions
from ._timers import TimerOptions
from ._worker import Worker, WorkerOptions

__all__ = [
    "BatchHooks",
    "Done",
    "EffectPublisher",
    "Engine",
    "EntityCache",
    "Hooks",
    "PartitionWorker",
    "PruneOptions",
    "Pruner",
    "QuarantineOptions",
    "TimerOptions",
    "Worker",
    "WorkerHooks",
    "WorkerOptions",
]
