"""The shared core: load, decide, commit, retry; and in-process effect delivery."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from examples import bank, counter
from pachyderm import App, EffectHandler
from pachyderm._processor import Processor
from pachyderm.store import EventStore, SqliteEventStore, open_store
from pachyderm.testing import assert_replay_matches


class Recorder(EffectHandler):
    name = "admin_mailer"

    def __init__(self) -> None:
        self.calls: list[Any] = []

    async def dispatch(self, payload: Any, config: Mapping[str, Any]) -> None:
        self.calls.append((payload, dict(config)))


@pytest.fixture
async def store() -> AsyncIterator[EventStore]:
    store = await open_store("sqlite:///:memory:")
    await store.migrate()
    yield store
    await store.close()


@pytest.fixture
def mailer() -> Recorder:
    return Recorder()


@pytest.fixture
def app(mailer: Recorder) -> App:
    return App([counter.Counter, bank.Account], effect_handlers=[mailer])


async def test_commands_apply_in_order_and_reply_with_the_new_state(
    app: App, store: EventStore
) -> None:
    processor = Processor(app, store)
    ref = counter.Counter.ref("c")
    replies = [
        (await processor.process(ref, counter.Increment(amount=n), f"c{n}")).reply
        for n in (1, 2, 3)
    ]
    assert replies == [{"count": 1}, {"count": 3}, {"count": 6}]
    await assert_replay_matches(store, app, ref, {"count": 6})


async def test_a_repeated_command_id_gets_the_stored_reply(app: App, store: EventStore) -> None:
    processor = Processor(app, store)
    ref = counter.Counter.ref("c")
    first = await processor.process(ref, counter.Increment(amount=5), "same")
    await processor.process(ref, counter.Increment(amount=1), "other")
    again = await Processor(app, store).process(ref, counter.Increment(amount=5), "same")
    assert (again.reply, again.duplicate, first.duplicate) == ({"count": 5}, True, False)
    assert (await store.load(ref)).version == 2


async def test_a_processor_with_stale_state_reloads_and_decides_again(
    app: App, store: EventStore
) -> None:
    first, second = Processor(app, store), Processor(app, store)
    ref = counter.Counter.ref("c")
    await first.process(ref, counter.Increment(amount=1), "a")
    await second.process(ref, counter.Increment(amount=10), "b")  # second caches version 2
    await first.process(ref, counter.Increment(amount=100), "c")  # first is stale: conflict
    result = await second.process(ref, counter.Increment(amount=1000), "d")
    assert result.reply == {"count": 1111}
    assert [e.version for e in await store.history(ref.id)] == [1, 2, 3, 4]


async def test_effects_are_delivered_after_the_commit_and_only_once(
    app: App, store: EventStore, mailer: Recorder
) -> None:
    processor = Processor(app, store)
    ref = counter.Counter.ref("c")
    await processor.process(ref, counter.Increment(amount=12), "a")
    assert mailer.calls == []
    assert await processor.drain_outbox({"to": "ops"}) == 1
    assert mailer.calls == [({"threshold": 10}, {"to": "ops"})]
    assert await processor.drain_outbox() == 0


async def test_a_transfer_reaches_the_target_through_the_outbox(
    app: App, store: EventStore
) -> None:
    processor = Processor(app, store)
    alice, bob, carol = bank.account("alice"), bank.account("bob"), bank.account("carol")
    await processor.process(alice, bank.Open(owner="alice"), "1")
    await processor.process(alice, bank.Deposit(amount=100), "2")
    await processor.process(bob, bank.Open(owner="bob"), "3")
    await processor.process(alice, bank.Transfer(to=bob.id, amount=30), "4")
    await processor.process(alice, bank.Transfer(to=carol.id, amount=20), "5")
    rejected = await processor.process(alice, bank.Transfer(to=bob.id, amount=1000), "6")
    assert rejected.rejection is not None
    assert await processor.drain_outbox() == 3  # credit bob, bounce at carol, return to alice
    balances = [
        (await assert_replay_matches(store, app, ref)).balance for ref in (alice, bob, carol)
    ]
    assert balances == [70, 30, 0]


async def test_concurrent_transfers_conserve_money(tmp_path: Path) -> None:
    app = App([bank.Account])
    path = tmp_path / "bank.db"
    stores = [await SqliteEventStore.open(path) for _ in range(3)]
    await stores[0].migrate()
    accounts = [bank.account(f"a{n}") for n in range(6)]
    setup = Processor(app, stores[0])
    for n, ref in enumerate(accounts):
        await setup.process(ref, bank.Open(owner=str(n)), f"open-{n}")
        await setup.process(ref, bank.Deposit(amount=1000), f"fund-{n}")
    rng = random.Random(7)

    async def client(number: int, processor: Processor) -> None:
        for step in range(40):
            source, target = rng.sample(accounts, 2)
            command = bank.Transfer(to=target.id, amount=rng.randint(1, 400))
            await processor.process(source, command, f"t{number}-{step}")
            await processor.drain_outbox()

    processors = [Processor(app, store) for store in stores]
    await asyncio.gather(*(client(n, p) for n, p in enumerate(processors)))
    await processors[0].drain_outbox()
    total = sum([(await assert_replay_matches(stores[0], app, ref)).balance for ref in accounts])
    assert total == 6 * 1000
    for store in stores:
        await store.close()
