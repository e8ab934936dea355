"""The batch engine: one commit per batch, conflicts retried, results only from real state."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from examples import bank, counter
from pachyderm import App, EntityTypeMismatchError, HandlerError, Ref, Reject
from pachyderm._wire import COMMAND, QUERY, Request
from pachyderm.store import Change, CommitOutcome, Conflict, EventStore
from pachyderm.testing import assert_replay_matches
from pachyderm.worker import Engine

APP = App([counter.Counter, bank.Account])
ALICE, BOB = bank.account("alice"), bank.account("bob")


def request(ref: Ref, message: Any, command_id: str | None = None, kind: str = COMMAND) -> Request:
    return Request(ref, APP.entity_type(ref.type), message, command_id or str(uuid.uuid4()), kind)


class CountingStore:
    """Delegates to a real store, counting commits (and optionally refusing them all)."""

    def __init__(self, store: EventStore, *, always_conflict: bool = False) -> None:
        self._store = store
        self.commits = 0
        self.always_conflict = always_conflict

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def commit(self, changes: Sequence[Change]) -> list[CommitOutcome]:
        self.commits += 1
        if self.always_conflict:
            return [Conflict(99) for _ in changes]
        return await self._store.commit(changes)


async def test_a_batch_across_entities_commits_once_and_replies_in_order(
    store: EventStore,
) -> None:
    counting = CountingStore(store)
    engine = Engine(APP, counting)
    results, committed = await engine.run(
        [
            request(ALICE, bank.Open(owner="alice")),
            request(BOB, bank.Open(owner="bob")),
            request(ALICE, bank.Deposit(amount=100)),
            request(ALICE, bank.Withdraw(amount=30)),
            request(ALICE, bank.Withdraw(amount=500)),
            request(BOB, bank.Deposit(amount=5)),
        ]
    )
    assert counting.commits == 1
    assert [r.reply for r in results[:4]] == [
        {"owner": "alice", "balance": 0},
        {"owner": "bob", "balance": 0},
        {"owner": "alice", "balance": 100},
        {"owner": "alice", "balance": 70},
    ]
    assert results[4].rejection == Reject("insufficient_funds", {"balance": 70})
    assert (results[5].reply, results[5].version) == ({"owner": "bob", "balance": 5}, 2)
    assert len(committed) == 6  # the rejection too: its command id is recorded
    await assert_replay_matches(store, APP, ALICE, bank.AccountState(owner="alice", balance=70))


async def test_a_stale_cache_is_caught_by_the_version_check_and_retried(
    store: EventStore,
) -> None:
    counting = CountingStore(store)
    first, second = Engine(APP, counting), Engine(APP, store)
    ref = counter.Counter.ref("c")
    await first.run([request(ref, counter.Increment(amount=1))])
    await second.run([request(ref, counter.Increment(amount=10))])
    counting.commits = 0
    results, _ = await first.run([request(ref, counter.Increment(amount=100))])
    assert results[0].reply == {"count": 111}
    assert counting.commits == 2  # refused once, then applied on fresh state
    assert [e.version for e in await store.history(ref.id)] == [1, 2, 3]


async def test_a_redelivered_command_gets_its_stored_reply_and_the_rest_still_apply(
    store: EventStore,
) -> None:
    engine = Engine(APP, store)
    ref = counter.Counter.ref("c")
    await engine.run([request(ref, counter.Increment(amount=5), "first")])
    results, _ = await Engine(APP, store).run(
        [
            request(ref, counter.Increment(amount=5), "first"),
            request(ref, counter.Increment(amount=1), "second"),
            request(ref, counter.Increment(amount=1), "second"),
        ]
    )
    assert [(r.reply, r.duplicate) for r in results] == [
        ({"count": 5}, True),
        ({"count": 6}, False),
        ({"count": 6}, True),
    ]
    await assert_replay_matches(store, APP, ref, {"count": 6})


async def test_many_copies_of_one_command_in_a_batch_apply_once_and_share_its_reply(
    store: EventStore,
) -> None:
    ref = counter.Counter.ref("c")
    retried = [request(ref, counter.Increment(amount=2), "retried") for _ in range(12)]
    results, committed = await Engine(APP, store, max_attempts=2).run(
        [
            request(ref, counter.Increment(amount=1), "before"),
            *retried,
            request(ref, counter.Increment(amount=5), "after"),
        ]
    )
    assert [r.reply for r in results] == [{"count": 1}] + [{"count": 3}] * 12 + [{"count": 8}]
    assert [r.duplicate for r in results[1:4]] == [False, True, True]
    assert len(committed) == 3
    await assert_replay_matches(store, APP, ref, {"count": 8})


async def test_commands_applied_before_do_not_use_up_the_attempts_of_the_rest(
    store: EventStore,
) -> None:
    ref = counter.Counter.ref("c")
    earlier = [request(ref, counter.Increment(amount=1), f"early-{n}") for n in range(6)]
    await Engine(APP, store).run(earlier)
    # Redelivered copies interleaved with new commands: each copy refuses the
    # lane's later changes once, which must not exhaust the new commands' attempts.
    mixed = [
        item for n in range(6) for item in (earlier[n], request(ref, counter.Increment(amount=10)))
    ]
    results, _ = await Engine(APP, store, max_attempts=2).run(mixed)
    assert all(result.error is None for result in results)
    await assert_replay_matches(store, APP, ref, {"count": 66})


async def test_a_failing_handler_fails_its_request_only(store: EventStore) -> None:
    class Broken(counter.Counter):
        type_name = "broken"

        def handle(self, message: Any, state: dict[str, int]) -> Any:
            if message.amount == 13:
                raise ValueError("unlucky")
            return super().handle(message, state)

    app = App([Broken])
    ref = Ref.from_key("broken", "b")
    entity_type = app.entity_type("broken")
    results, _ = await Engine(app, store).run(
        [
            Request(ref, entity_type, counter.Increment(amount=13), "a"),
            Request(ref, entity_type, counter.Increment(amount=2), "b"),
        ]
    )
    assert isinstance(results[0].error, HandlerError)
    assert "unlucky" in str(results[0].error)
    assert results[1].reply == {"count": 2}


async def test_an_id_of_another_type_is_invalid_for_its_requests_alone(
    store: EventStore,
) -> None:
    engine = Engine(APP, store)
    await engine.run([request(ALICE, bank.Open(owner="alice"))])
    await engine.run([request(BOB, bank.Open(owner="bob"))])
    engine.cache.forget([ALICE, BOB])  # the batch below loads them again
    as_counter = Ref("counter", ALICE.id)
    counting = CountingStore(store)
    results, committed = await Engine(APP, counting).run(
        [
            request(BOB, bank.Deposit(amount=5)),
            request(as_counter, counter.Increment(amount=1)),
            request(ALICE, bank.Deposit(amount=7)),
            request(as_counter, None, kind=QUERY),
            request(BOB, bank.Deposit(amount=1)),
        ]
    )
    for refused in (results[1], results[3]):
        assert isinstance(refused.error, EntityTypeMismatchError)
        assert "is a 'account', not a 'counter'" in str(refused.error)
    assert [(r.version, r.reply) for r in (results[0], results[2], results[4])] == [
        (2, {"owner": "bob", "balance": 5}),
        (2, {"owner": "alice", "balance": 7}),
        (3, {"owner": "bob", "balance": 6}),
    ]
    assert (counting.commits, len(committed)) == (1, 3)
    await assert_replay_matches(store, APP, ALICE, bank.AccountState(owner="alice", balance=7))


async def test_an_id_of_another_type_is_never_cached_nor_recalled(store: EventStore) -> None:
    engine = Engine(APP, store)
    await engine.run([request(ALICE, bank.Open(owner="alice"), "same-id")])
    as_counter = Ref("counter", ALICE.id)
    for _ in range(2):
        # The same command id as the account's own command: not its stored answer.
        results, committed = await engine.run(
            [request(as_counter, counter.Increment(amount=1), "same-id")]
        )
        assert isinstance(results[0].error, EntityTypeMismatchError)
        assert (results[0].duplicate, committed) == (False, [])
        assert as_counter not in engine.cache


async def test_queries_and_rejections_see_the_committed_state(store: EventStore) -> None:
    stale, other = Engine(APP, store), Engine(APP, store)
    await stale.run([request(ALICE, bank.Open(owner="alice"))])
    await other.run([request(ALICE, bank.Deposit(amount=100))])
    # The stale engine caches a balance of 0: without the version check it
    # would refuse the withdrawal and report an empty account.
    results, _ = await stale.run(
        [
            request(ALICE, None, kind=QUERY),
            request(ALICE, bank.Withdraw(amount=60)),
        ]
    )
    assert results[0].reply == {"owner": "alice", "balance": 100}
    assert results[1].reply == {"owner": "alice", "balance": 40}


async def test_a_query_writes_nothing(store: EventStore) -> None:
    engine = Engine(APP, store)
    results, committed = await engine.run([request(ALICE, None, kind=QUERY)])
    assert (results[0].reply, committed) == ({"owner": None, "balance": 0}, [])
    assert (await store.load(ALICE)).version == 0


async def test_endless_conflicts_end_in_an_error_after_bounded_attempts(
    store: EventStore,
) -> None:
    counting = CountingStore(store, always_conflict=True)
    engine = Engine(APP, counting, max_attempts=3)
    results, committed = await engine.run([request(ALICE, bank.Open(owner="alice"))])
    assert counting.commits == 3
    assert isinstance(results[0].error, HandlerError)
    assert "still conflicting" in str(results[0].error)
    assert committed == []


async def test_a_retried_command_gets_its_first_answer_whatever_happened_since(
    store: EventStore,
) -> None:
    engine = Engine(APP, store)
    await engine.run([request(ALICE, bank.Open(owner="alice"))])
    first, _ = await engine.run(
        [
            request(ALICE, bank.Withdraw(amount=5), "withdraw-1"),  # refused: empty account
            request(ALICE, bank.Open(owner="alice"), "open-again"),  # refused: already open
        ]
    )
    await engine.run([request(ALICE, bank.Deposit(amount=100))])
    # Decided again now, both would go the other way (or differently);
    # retried, they get what their callers were told the first time.
    retried, committed = await Engine(APP, store).run(
        [
            request(ALICE, bank.Withdraw(amount=5), "withdraw-1"),
            request(ALICE, bank.Open(owner="alice"), "open-again"),
        ]
    )
    assert [r.rejection for r in retried] == [r.rejection for r in first]
    assert all(r.duplicate for r in retried)
    assert committed == []
    await assert_replay_matches(store, APP, ALICE, bank.AccountState(owner="alice", balance=100))


async def test_an_entity_unloaded_while_its_batch_is_decided_in_a_child_is_loaded_again(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A suspect batch's child takes a while; meanwhile the worker's other runs go on,
    and the cache may drop the entity (unloaded as idle, evicted): the worker's own
    decision after the child's loads it again rather than failing the batch."""
    engine = Engine(APP, store)
    await engine.run([request(ALICE, bank.Open(owner="alice"))])
    probing = engine._probe

    async def probe_then_unload(*args: Any) -> None:
        await probing(*args)
        engine.cache.forget([ALICE])  # as an idle unload during the child's run

    monkeypatch.setattr(engine, "_probe", probe_then_unload)
    [result], _ = await engine.run([request(ALICE, bank.Deposit(amount=5))], isolate=5.0)
    assert result.error is None
    assert result.reply == {"owner": "alice", "balance": 5}


async def test_an_entity_dropped_again_while_it_loads_goes_round_once_more(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine(APP, store)
    await engine.run([request(ALICE, bank.Open(owner="alice"))])
    loading = engine._load
    drops = [2]  # after the first load and the one before deciding

    async def load_then_drop(*args: Any) -> None:
        await loading(*args)
        if drops[0]:
            drops[0] -= 1
            engine.cache.forget([ALICE])

    monkeypatch.setattr(engine, "_load", load_then_drop)
    [result], _ = await engine.run([request(ALICE, bank.Deposit(amount=5))])
    assert result.error is None
    assert result.reply == {"owner": "alice", "balance": 5}
