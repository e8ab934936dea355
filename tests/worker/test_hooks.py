"""The worker's hooks: every point of a command's path reaches them, several combine as
one, and the engine, partitions and outbox import no concern (telemetry included)."""

from __future__ import annotations

import ast
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest

import pachyderm
from examples import counter
from pachyderm import App
from pachyderm._wire import Request, command_message
from pachyderm.store import EventStore, OutboxEntry
from pachyderm.transport import Delivery, InProcessTransport, Message, Topology
from pachyderm.worker import (
    BatchHooks,
    EffectPublisher,
    Engine,
    Hooks,
    PartitionWorker,
    WorkerHooks,
)

T = TypeVar("T")
APP = App([counter.Counter], effect_handlers=[counter.AdminMailer()])


class Recording(WorkerHooks):
    """Writes down each hook called, in order, under its own name."""

    def __init__(self, name: str, calls: list[str]) -> None:
        self.name = name
        self.calls = calls

    def _around(self, point: str) -> AbstractContextManager[object]:
        return self._span(point, None)

    @contextmanager
    def _span(self, point: str, value: T) -> Iterator[T]:
        self.calls.append(f"{self.name}:{point}")
        yield value
        self.calls.append(f"{self.name}:/{point}")

    def batch(
        self, exchange: str, partition: int, deliveries: Sequence[Delivery]
    ) -> AbstractContextManager[BatchHooks]:
        outcomes: BatchHooks = _Outcomes(self.name, self.calls)
        return self._span("batch", outcomes)

    def loading(self, store: object, entities: int) -> AbstractContextManager[object]:
        return self._around(f"load {entities}")

    def deciding(self) -> AbstractContextManager[object]:
        return self._around("decide")

    def committing(self, store: object, changes: int) -> AbstractContextManager[object]:
        return self._around(f"commit {changes}")

    def publishing(
        self, exchange: str, message: Message, entry: OutboxEntry, batch: BatchHooks | None
    ) -> AbstractContextManager[Message]:
        assert isinstance(batch, _Outcomes)
        assert batch.name == self.name  # its own batch, out of the combined one
        headers = {**message.headers, self.name: "seen"}
        return self._span("publish", replace(message, headers=headers))

    def published(self, entries: Sequence[OutboxEntry], source: str) -> None:
        self.calls.append(f"{self.name}:published {len(entries)} {source}")


class _Outcomes(BatchHooks):
    measuring = True

    def __init__(self, name: str, calls: list[str]) -> None:
        self.name = name
        self.calls = calls

    def outcome(self, index: int, entity_type: str | None, outcome: str) -> None:
        self.calls.append(f"{self.name}:outcome {index} {entity_type} {outcome}")


async def test_every_point_of_a_batch_reaches_each_hook_in_order(store: EventStore) -> None:
    calls: list[str] = []
    hooks = Hooks([Recording("a", calls), Recording("b", calls)])
    transport = InProcessTransport(Topology(partitions=1))
    await transport.start()
    effects: list[Message] = []

    async def record(message: Message) -> None:
        effects.append(message)

    await transport.consume_effects("test", ["effect.#"], record)
    try:
        inbox = await transport.open_inbox(0, prefetch=1)
        partition = PartitionWorker(
            inbox,
            APP,
            Engine(APP, store, hooks=hooks),
            transport,
            EffectPublisher(store, transport, hooks=hooks),
            hooks=hooks,
        )
        crossing = command_message(
            APP, counter.Counter.ref("c"), counter.Increment(amount=11), command_id="x"
        )
        await transport.publish_command(crossing)
        await partition.handle(await inbox.take(1))
    finally:
        await transport.close()
    assert calls == [
        "a:batch",
        "b:batch",
        "a:load 1",
        "b:load 1",
        "b:/load 1",
        "a:/load 1",
        "a:decide",
        "b:decide",
        "b:/decide",
        "a:/decide",
        "a:commit 1",
        "b:commit 1",
        "b:/commit 1",
        "a:/commit 1",
        "a:publish",
        "b:publish",
        "b:/publish",
        "a:/publish",
        "a:published 1 commit",
        "b:published 1 commit",
        "a:outcome 0 counter ok",
        "b:outcome 0 counter ok",
        "b:/batch",
        "a:/batch",
    ]
    [effect] = effects
    assert (effect.headers["a"], effect.headers["b"]) == ("seen", "seen")


async def test_without_hooks_nothing_is_traced_or_measured(store: EventStore) -> None:
    # The no-op hooks: the engine runs exactly as with any others.
    results, committed = await Engine(APP, store).run([])
    assert (results, committed) == ([], [])
    engine = Engine(APP, store, hooks=WorkerHooks())
    ref = counter.Counter.ref(str(uuid.uuid4()))
    [done], _ = await engine.run(
        [Request(ref, APP.entity_type("counter"), counter.Increment(), "c1")]
    )
    assert done.reply == {"count": 1}


CORE = ("_engine.py", "_partition.py", "_outbox.py", "_cache.py", "_group_commit.py")


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("module", CORE)
def test_the_engine_partitions_and_outbox_import_no_concern(module: str) -> None:
    path = Path(pachyderm.__file__).parent / "worker" / module
    concerns = {
        name for name in imported_modules(path) if "telemetry" in name or "opentelemetry" in name
    }
    assert not concerns, f"worker/{module} imports {concerns}: go through the hooks"
