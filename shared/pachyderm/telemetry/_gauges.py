"""What the observable gauges read: the state of the workers running in this process.

A worker registers while it runs; the gauges sum over what is registered
when a reader collects, so nothing is computed between scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from opentelemetry.metrics import CallbackOptions, Observation

Reading = Callable[[], int]

_partitions: list[Reading] = []
_entities: list[Reading] = []
_unrouted: list[Reading] = []
_timers: list[Reading] = []
_in_flight: list[Reading] = []


@contextmanager
def observing(*, partitions: Reading, entities: Reading) -> Iterator[None]:
    """Report ``partitions()`` (owned) and ``entities()`` (cached) while in the block."""
    _partitions.append(partitions)
    _entities.append(entities)
    try:
        yield
    finally:
        _partitions.remove(partitions)
        _entities.remove(entities)


@contextmanager
def observing_unrouted(waiting: Reading) -> Iterator[None]:
    """Report ``waiting()`` (effects no group's queue is bound for) while in the block."""
    _unrouted.append(waiting)
    try:
        yield
    finally:
        _unrouted.remove(waiting)


@contextmanager
def observing_timers(pending: Reading) -> Iterator[None]:
    """Report ``pending()`` (timers pending in the store, last counted) while in the block."""
    _timers.append(pending)
    try:
        yield
    finally:
        _timers.remove(pending)


@contextmanager
def observing_in_flight(commands: Reading) -> Iterator[None]:
    """Report ``commands()`` (handled now by a worker with a cap) while in the block."""
    _in_flight.append(commands)
    try:
        yield
    finally:
        _in_flight.remove(commands)


def _total(readings: list[Reading]) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(_: CallbackOptions) -> Iterable[Observation]:
        # No worker, no data point: a process without workers has no such gauge.
        return [Observation(sum(reading() for reading in readings))] if readings else []

    return observe


observe_partitions = _total(_partitions)
observe_entities = _total(_entities)
observe_in_flight = _total(_in_flight)


def observe_unrouted(_: CallbackOptions) -> Iterable[Observation]:
    # Every dispatcher reads the same queue: the newest reading, not a sum.
    return [Observation(_unrouted[-1]())] if _unrouted else []


def observe_timers(_: CallbackOptions) -> Iterable[Observation]:
    # Every worker counts the same table: the newest reading, not a sum.
    return [Observation(_timers[-1]())] if _timers else []
