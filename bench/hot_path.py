"""The worker's own CPU per command, in process: what each capability costs on it.

    python -m bench.hot_path [--commands 20000] [--repeats 5]

A partition worker applies one-delivery batches (the sequential case: decide,
commit, reply, ack) with no broker and no database behind it: the in-process
transport, and a store whose commit answers at once, so that only Pachyderm's
own Python is measured. CPU time (``time.thread_time``) per command, the median of
``--repeats`` passes, is steady on a loaded machine where wall-clock latencies
are not. Variants switch one capability on at a time beside the bare path:
telemetry (metrics as a worker keeps them for ``/metrics``), quarantine
accounting (the partition's admission and attempt of every batch), the log's
wake-ups (the commit's NOTIFY, queued per commit), and all three as deployed.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pachyderm
from pachyderm import Ref, Settings
from pachyderm._wire import named_message
from pachyderm.store import Change, CommitOutcome, Committed, SqliteEventStore
from pachyderm.store._postgres_wakeups import LogNotifier
from pachyderm.telemetry import TelemetryHooks
from pachyderm.telemetry._setup import setup_telemetry
from pachyderm.transport import InProcessTransport, Message, Topology
from pachyderm.worker import EffectPublisher, Engine, PartitionWorker, WorkerHooks
from pachyderm.worker._quarantine import PartitionQuarantine, QuarantineOptions

from .app import APP, COMMAND, ENTITY_TYPE

TELEMETRY, QUARANTINE, WAKEUPS = "telemetry", "quarantine", "log wake-ups"
DEPLOYED = "as deployed"  # all three, as a worker on PostgreSQL runs
VARIANTS = ("bare", TELEMETRY, QUARANTINE, WAKEUPS, DEPLOYED)


def _has(variant: str, capability: str) -> bool:
    return variant in (capability, DEPLOYED)


class InstantStore(SqliteEventStore):
    """Loads as the embedded store does (nothing stored: new entities); commits at once."""

    async def commit(self, changes: Sequence[Change]) -> list[CommitOutcome]:
        return [Committed(c.expected_version + len(c.events)) for c in changes]


class NotifyingStore(InstantStore):
    """The same, queueing a log wake-up per commit as the PostgreSQL store does."""

    notifier: LogNotifier | None = None

    async def commit(self, changes: Sequence[Change]) -> list[CommitOutcome]:
        outcomes = await super().commit(changes)
        assert self.notifier is not None
        self.notifier.committed(change.partition for change in changes if change.events)
        return outcomes


async def _partition(variant: str) -> tuple[PartitionWorker, InProcessTransport, Any]:
    store = await (NotifyingStore if _has(variant, WAKEUPS) else InstantStore).open(":memory:")
    await store.migrate()
    if isinstance(store, NotifyingStore):
        store.notifier = LogNotifier(_NoPool(), "bench")
    hooks: WorkerHooks = TelemetryHooks() if _has(variant, TELEMETRY) else WorkerHooks()
    transport = InProcessTransport(Topology(partitions=1))
    await transport.start()
    engine = Engine(APP, store, hooks=hooks)
    inbox = await transport.open_inbox(0, prefetch=10)
    quarantine = None
    if _has(variant, QUARANTINE):
        quarantine = PartitionQuarantine(
            inbox, store.quarantine_store(), store, transport, QuarantineOptions(), hooks=hooks
        )
    effects = EffectPublisher(store, transport, hooks=hooks)
    worker = PartitionWorker(
        quarantine or inbox, APP, engine, transport, effects, hooks=hooks, quarantine=quarantine
    )
    return worker, transport, store


class _NoPool:
    """A pool the notifier's NOTIFY never reaches (it fails as an outage would)."""

    def acquire(self) -> Any:  # the notifier's only use of its pool
        raise OSError("no database in this measurement")


async def _pass(variant: str, commands: int, batch: int = 1) -> tuple[float, float]:
    """CPU microseconds per command of the partition worker's ``handle`` of batches of
    ``batch`` (to as many entities): until it hands the replies to the transport, and
    in all."""
    worker, transport, store = await _partition(variant)
    address = await transport.listen_replies(_ignore)
    refs = [Ref(ENTITY_TYPE, uuid.uuid4()) for _ in range(batch)]
    replying = transport.publish_replies
    replied: list[float] = []

    async def publish_replies(messages: Sequence[Message]) -> None:
        replied.append(time.thread_time())
        await replying(messages)

    transport.publish_replies = publish_replies  # type: ignore[method-assign]
    to_reply = spent = 0.0
    try:
        for _ in range(commands // batch):
            for ref in refs:
                message = named_message(ref, COMMAND, {"amount": 1})
                replying_to = replace(message, reply_to=address, correlation_id="c")
                await transport.publish_command(replying_to)
            deliveries = await worker.inbox.take(batch)
            started = time.thread_time()
            await worker.handle(deliveries)
            spent += time.thread_time() - started
            to_reply += replied[-1] - started
    finally:
        await transport.close()
        if isinstance(store, NotifyingStore) and store.notifier is not None:
            await store.notifier.close()
        await store.close()
    done = commands // batch * batch
    return to_reply / done * 1e6, spent / done * 1e6


async def _ignore(_message: Message) -> None:
    return None


async def measure(commands: int, repeats: int, batch: int) -> dict[str, tuple[float, float]]:
    """Per variant: median CPU microseconds per command to the reply, and in all (with
    telemetry as :func:`main` sets it up: metrics kept for ``/metrics``)."""
    found: dict[str, list[tuple[float, float]]] = {variant: [] for variant in VARIANTS}
    for _ in range(repeats):
        for variant in VARIANTS:  # interleaved: drift in the machine hits all alike
            found[variant].append(await _pass(variant, commands, batch))
    return {
        variant: (
            statistics.median(sample[0] for sample in samples),
            statistics.median(sample[1] for sample in samples),
        )
        for variant, samples in found.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hot_path", description=__doc__)
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1, help="deliveries a batch (1)")
    options = parser.parse_args(argv)
    setup_telemetry(Settings(), "bench-hot-path")
    found = pachyderm.run(measure(options.commands, options.repeats, options.batch))
    bare_reply, bare = found["bare"]
    print("CPU microseconds per command: until the reply is handed over | in all")
    for variant, (reply, whole) in found.items():
        print(
            f"{variant:<14} {reply:7.1f} ({reply - bare_reply:+6.1f}) | {whole:7.1f}"
            f" ({whole - bare:+6.1f}, {(whole - bare) / bare:+.1%})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
