"""Fleet membership on the machine's real PostgreSQL, and embedded mode's fleet of one."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pachyderm import DuplicateWorkerError
from pachyderm.fleet import Membership, PostgresMembership, SoloMembership, assign
from pachyderm.store import PostgresEventStore, SqliteEventStore
from tests.blocked_loop import block

PARTITIONS = 16
# Short enough to keep the tests fast, long enough for a loaded CI machine.
INTERVAL, DEAD_AFTER = 0.1, 0.3
# How late past its deadline a hand-over may be observed: a heartbeat's round
# trips, the event loop, the 10 ms polling of `eventually`.
SLACK = 0.25

postgres = pytest.mark.postgres


async def eventually(condition: Callable[[], bool | Awaitable[bool]], within: float = 5.0) -> float:
    """Wait until ``condition()`` holds; the seconds that took."""
    start = time.monotonic()
    while True:
        holds = condition()
        if holds if isinstance(holds, bool) else await holds:
            return time.monotonic() - start
        assert time.monotonic() - start < within, f"not so within {within} s"
        await asyncio.sleep(0.01)


class Watcher:
    """Runs one member's ``watch`` and remembers the partitions it was last given."""

    def __init__(self, membership: Membership) -> None:
        self.membership = membership
        self.worker_id = membership.worker_id
        self.owned: list[int] | None = None
        self.calls = 0
        self.changed_at = 0.0  # time.monotonic() of the last call
        self._task = asyncio.create_task(membership.watch(self._on_change, PARTITIONS))

    async def _on_change(self, owned: list[int]) -> None:
        self.owned = owned
        self.calls += 1
        self.changed_at = time.monotonic()

    @property
    def running(self) -> bool:
        return not self._task.done()

    async def ended(self, within: float = 5.0) -> BaseException | None:
        """Wait for the watch to end on its own; what it raised."""
        done, _ = await asyncio.wait([self._task], timeout=within)
        assert done, f"the watch still runs after {within} s"
        return self._task.exception()

    async def kill(self) -> None:
        """Stop heartbeating without leaving, as SIGKILL would."""
        if self._task.done():  # it ended on its own: the test looked at how (ended)
            return
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task


def split_as_assigned(watchers: list[Watcher]) -> bool:
    """Whether the watchers own exactly what :func:`assign` gives them among themselves."""
    expected = assign(PARTITIONS, [watcher.worker_id for watcher in watchers])
    return all(watcher.owned == expected[watcher.worker_id] for watcher in watchers)


class Fleet:
    """Members of one migrated namespace; closes them all at the end of the test."""

    def __init__(self, dsn: str, namespace: str) -> None:
        self.dsn = dsn
        self.namespace = namespace
        self._members: list[PostgresMembership] = []
        self._watchers: list[Watcher] = []

    async def member(
        self,
        worker_id: str,
        *,
        interval: float = INTERVAL,
        dead_after: float = DEAD_AFTER,
        info: str | None = None,
        join_delay: float | None = None,
        fleet_size: int | None = None,
        pause_tolerance: float = 0.0,
    ) -> PostgresMembership:
        member = await PostgresMembership.connect(
            self.dsn,
            worker_id=worker_id,
            schema=self.namespace,
            info=info,
            heartbeat_interval=interval,
            dead_after=dead_after,
            join_delay=join_delay,
            fleet_size=fleet_size,
            pause_tolerance=pause_tolerance,
        )
        self._members.append(member)
        return member

    async def watcher(self, worker_id: str, **options: Any) -> Watcher:
        watcher = Watcher(await self.member(worker_id, **options))
        self._watchers.append(watcher)
        return watcher

    async def query(self, sql: str) -> list[asyncpg.Record]:
        """Run ``sql`` in the namespace, behind the members' backs."""
        connection = await asyncpg.connect(
            self.dsn, server_settings={"search_path": self.namespace}
        )
        try:
            rows: list[asyncpg.Record] = await connection.fetch(sql)
            return rows
        finally:
            await connection.close()

    async def close(self) -> None:
        for watcher in self._watchers:
            await watcher.kill()
        for member in self._members:
            await member.close()


@pytest.fixture
async def fleet(postgres_dsn: str, namespace: str) -> AsyncIterator[Fleet]:
    store = await PostgresEventStore.connect(postgres_dsn, schema=namespace, max_size=1)
    try:
        await store.migrate()
        fleet = Fleet(postgres_dsn, namespace)
        try:
            yield fleet
        finally:
            await fleet.close()
    finally:
        await store.drop_namespace()
        await store.close()


@postgres
async def test_joining_makes_a_worker_live(fleet: Fleet) -> None:
    member = await fleet.member("a")
    assert await member.live_workers() == []
    await member.join()
    await (await fleet.member("b")).join()
    assert await member.live_workers() == ["a", "b"]


@postgres
async def test_a_silent_worker_is_dead_after_dead_after(fleet: Fleet) -> None:
    member = await fleet.member("a")
    start = time.monotonic()
    await member.join()

    async def dead() -> bool:
        return await member.live_workers() == []

    await eventually(dead)
    # Judged by the database's clock, which read at least `start` when it stored the heartbeat.
    assert DEAD_AFTER <= time.monotonic() - start <= DEAD_AFTER + SLACK
    await fleet.query("DELETE FROM workers")  # as pruning would, in a long outage
    await member.heartbeat()
    assert await member.live_workers() == ["a"]


@postgres
async def test_leaving_removes_a_worker_at_once(fleet: Fleet) -> None:
    member = await fleet.member("a")
    await member.join()
    await member.leave()
    assert await member.live_workers() == []


@postgres
@pytest.mark.parametrize(
    ("interval", "dead_after"), [(INTERVAL, DEAD_AFTER), (0.5, 1.5)], ids=["fast", "default"]
)
async def test_a_killed_workers_partitions_go_to_the_survivor(
    fleet: Fleet, interval: float, dead_after: float
) -> None:
    a = await fleet.watcher("a", interval=interval, dead_after=dead_after)
    b = await fleet.watcher("b", interval=interval, dead_after=dead_after)
    await eventually(lambda: split_as_assigned([a, b]))
    assert a.owned is not None
    assert b.owned is not None
    assert (len(a.owned), len(b.owned)) == (8, 8)
    assert sorted(a.owned + b.owned) == list(range(PARTITIONS))

    await a.kill()
    failover = await eventually(lambda: b.owned == list(range(PARTITIONS)))
    # a's lease runs out dead_after after its last heartbeat (before the kill),
    # and b looks at most one interval later.
    assert failover <= dead_after + interval + SLACK


@postgres
async def test_workers_joining_and_leaving_rebalance(fleet: Fleet) -> None:
    a, b = await fleet.watcher("a"), await fleet.watcher("b")
    await eventually(lambda: split_as_assigned([a, b]))
    c = await fleet.watcher("c")
    await eventually(lambda: split_as_assigned([a, b, c]))

    await c.kill()
    await c.membership.leave()
    # A clean exit hands over on the others' next heartbeat, without waiting for dead_after.
    handover = await eventually(lambda: split_as_assigned([a, b]))
    assert handover <= INTERVAL + SLACK


@postgres
async def test_workers_started_together_are_counted_together(fleet: Fleet) -> None:
    # Both start early in one join-delay window of the database's clock, so both
    # count at its end: the first never claims every partition to hand half over.
    join_delay = 1.0
    [row] = await fleet.query("SELECT extract(epoch FROM now())::float8 AS now")
    await asyncio.sleep(join_delay - row["now"] % join_delay + 0.05)
    start = time.monotonic()
    a = await fleet.watcher("a", join_delay=join_delay)
    await asyncio.sleep(0.2)
    assert a.owned is None  # live, not settled: nothing reported yet
    b = await fleet.watcher("b", join_delay=join_delay)
    settling = await eventually(lambda: split_as_assigned([a, b]))
    assert (a.calls, b.calls) == (1, 1)
    # Counted at the end of the window after their own: 1 to 2 join delays after starting.
    assert join_delay - SLACK <= time.monotonic() - start <= 2 * join_delay + INTERVAL + SLACK
    assert settling > 0

    # A newcomer settles the same way while the others keep their partitions; a
    # leaver's go at once.
    c = await fleet.watcher("c", join_delay=join_delay)
    await asyncio.sleep(join_delay / 2)
    assert c.owned is None
    assert split_as_assigned([a, b])
    await eventually(lambda: split_as_assigned([a, b, c]))
    await c.kill()
    await c.membership.leave()
    assert await eventually(lambda: split_as_assigned([a, b])) <= INTERVAL + SLACK


@postgres
async def test_a_fleet_told_its_size_counts_once_all_joined_not_a_join_delay_later(
    fleet: Fleet,
) -> None:
    # A join delay of 5 s: without the size, neither would count for 5 to 10 s.
    join_delay = 5.0
    start = time.monotonic()
    a = await fleet.watcher("a", join_delay=join_delay, fleet_size=2)
    await asyncio.sleep(3 * INTERVAL)
    assert a.owned is None  # alone of two: it waits
    b = await fleet.watcher("b", join_delay=join_delay, fleet_size=2)
    await eventually(lambda: split_as_assigned([a, b]))
    assert (a.calls, b.calls) == (1, 1)  # nobody claimed all to hand half over
    assert time.monotonic() - start < join_delay

    # b replaced (a rolling restart): the new run takes b's share at once.
    await b.kill()
    await b.membership.leave()
    await eventually(lambda: a.owned == list(range(PARTITIONS)))
    again = await fleet.watcher("b2", join_delay=join_delay, fleet_size=2)
    assert await eventually(lambda: split_as_assigned([a, again])) < join_delay


@postgres
async def test_members_switch_together_when_a_newcomer_counts(fleet: Fleet) -> None:
    # Heartbeats half a second apart: each member would otherwise hand over at its
    # own next heartbeat, up to that far from the others. They all look again at
    # the instant the newcomer counts, read off the database's clock.
    # a's and b's heartbeats are half an interval apart: at their own heartbeats they
    # would switch 0.25 s apart, so never both within 0.1 s of c.
    timing = {"interval": 0.5, "dead_after": 1.5, "join_delay": 1.0}
    a = await fleet.watcher("a", **timing)
    await asyncio.sleep(0.25)
    b = await fleet.watcher("b", **timing)
    await eventually(lambda: split_as_assigned([a, b]), within=10)
    c = await fleet.watcher("c", **timing)
    await eventually(lambda: split_as_assigned([a, b, c]), within=10)
    assert c.calls == 1
    for settled in (a, b):
        assert abs(settled.changed_at - c.changed_at) < 0.1


@postgres
async def test_workers_long_dead_are_pruned(fleet: Fleet) -> None:
    await fleet.query(
        "INSERT INTO workers (worker_id, heartbeat_at) VALUES"
        " ('long-gone', now() - interval '1 hour'), ('just-died', now() - interval '1 second')"
    )
    a = await fleet.watcher("a")
    await eventually(lambda: a.owned == list(range(PARTITIONS)))  # after a first heartbeat
    rows = await fleet.query("SELECT worker_id FROM workers ORDER BY worker_id")
    # Until ten times dead_after, a dead worker's row stays for operators to see.
    assert [row["worker_id"] for row in rows] == ["a", "just-died"]


@postgres
async def test_a_worker_cut_off_from_the_database_hands_its_partitions_back_once_its_lease_lapsed(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pachyderm.fleet")
    a = await fleet.watcher("a")
    await eventually(lambda: a.owned == list(range(PARTITIONS)))

    await fleet.query("ALTER TABLE workers RENAME TO workers_away")  # every heartbeat fails
    cut = time.monotonic()
    await eventually(lambda: a.owned == [])
    # Not before its last renewal (before the cut) is dead_after old: the others
    # cannot have taken its partitions sooner.
    assert time.monotonic() - cut >= DEAD_AFTER - INTERVAL
    assert "not renewed its lease" in caplog.text
    assert (a.running, a.calls) == (True, 2)

    await fleet.query("ALTER TABLE workers_away RENAME TO workers")
    await eventually(lambda: "reached the database again" in caplog.text)
    await eventually(lambda: a.owned == list(range(PARTITIONS)))
    assert (a.running, a.calls) == (True, 3)


@postgres
async def test_a_failed_hand_over_is_retried(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[list[int]] = []

    async def flaky(owned: list[int]) -> None:
        calls.append(owned)
        if len(calls) == 1:
            raise RuntimeError("broker unavailable")

    task = asyncio.create_task((await fleet.member("a")).watch(flaky, PARTITIONS))
    try:
        await eventually(lambda: len(calls) == 2)
        assert calls == [list(range(PARTITIONS))] * 2
        assert "broker unavailable" in caplog.text
        await asyncio.sleep(3 * INTERVAL)
        assert len(calls) == 2  # not called again once it succeeded
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


@postgres
async def test_a_hand_back_failing_while_the_database_is_away_is_retried_meanwhile(
    fleet: Fleet,
) -> None:
    """Its lease lapsed, a worker hands its partitions back; that failing (a channel
    closing under it), it tries again a heartbeat interval on, though no heartbeat gets
    through: else it would keep saying it serves them until the database came back.
    (The cuts test, session 21.)"""
    calls: list[list[int]] = []

    async def flaky(owned: list[int]) -> None:
        calls.append(owned)
        if owned == [] and calls.count([]) == 1:
            raise RuntimeError("closing an inbox failed")

    task = asyncio.create_task((await fleet.member("a")).watch(flaky, PARTITIONS))
    try:
        await eventually(lambda: calls == [list(range(PARTITIONS))])
        await fleet.query("ALTER TABLE workers RENAME TO workers_away")  # every heartbeat fails
        try:
            await eventually(lambda: calls.count([]) == 2)
        finally:
            await fleet.query("ALTER TABLE workers_away RENAME TO workers")
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def test_a_hand_over_failing_with_a_stray_cancellation_is_retried(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    """aiormq raises CancelledError at whatever waits on a channel it closes: the
    membership's reports must not end with it (the worker would keep heartbeating on
    partitions it never hands over)."""
    calls: list[list[int]] = []

    async def cut_off(owned: list[int]) -> None:
        calls.append(owned)
        if len(calls) == 1:
            raise asyncio.CancelledError  # as aiormq's, from a channel it closed

    task = asyncio.create_task((await fleet.member("a")).watch(cut_off, PARTITIONS))
    try:
        await eventually(lambda: len(calls) == 2)
        assert "on_change" in caplog.text
        assert "CancelledError" in caplog.text
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


# -- one process per worker id --------------------------------------------------------


async def holder_info(fleet: Fleet, worker_id: str) -> list[str]:
    rows = await fleet.query(f"SELECT info FROM workers WHERE worker_id = '{worker_id}'")
    return [row["info"] for row in rows]


class Silence:
    """How long ago a worker last renewed its lease, read from a thread at ``after``
    seconds: while the test's event loop is blocked."""

    def __init__(self, fleet: Fleet, worker_id: str, after: float) -> None:
        self.seconds: float | None = None
        sql = (
            "SELECT extract(epoch FROM now() - heartbeat_at)::float8 AS silent"
            f" FROM workers WHERE worker_id = '{worker_id}'"
        )

        def read() -> None:
            time.sleep(after)
            [row] = asyncio.run(fleet.query(sql))
            self.seconds = row["silent"]

        self._thread = threading.Thread(target=read)
        self._thread.start()

    def read(self) -> float:
        self._thread.join()
        assert self.seconds is not None
        return self.seconds


# A lease of five intervals: the keeper's first renewal, and its connection, have
# time to spare on a loaded machine.
PAUSED = {"interval": 0.2, "dead_after": 1.0, "join_delay": 0}


@postgres
async def test_a_blocked_loop_keeps_its_lease_and_partitions_within_the_tolerance(
    fleet: Fleet,
) -> None:
    watcher = await fleet.watcher("blocked", pause_tolerance=3.0, **PAUSED)
    await eventually(lambda: watcher.owned == list(range(PARTITIONS)))
    reports = watcher.calls
    silence = Silence(fleet, "blocked", after=1.6)
    block(2.0)  # the event loop blocked, as by a hanging handler, twice dead_after
    assert silence.read() < PAUSED["dead_after"]
    await asyncio.sleep(3 * PAUSED["interval"])
    assert watcher.calls == reports  # never reported its partitions lost
    assert watcher.owned == list(range(PARTITIONS))


@postgres
async def test_a_heartbeat_overtaken_by_a_pause_does_not_count_the_lease_lapsed(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    watcher = await fleet.watcher("blocked", pause_tolerance=3.0, **PAUSED)
    await eventually(lambda: watcher.owned == list(range(PARTITIONS)))
    reports = watcher.calls
    store = watcher.membership.store  # type: ignore[attr-defined]
    renew_and_roll = store.renew_and_roll
    paused = asyncio.Event()

    async def overtaken(*arguments: Any, **options: Any) -> Any:
        roll = await renew_and_roll(*arguments, **options)
        if not paused.is_set():
            paused.set()
            block(2.0)  # the loop blocked with the heartbeat's time limit running
            await asyncio.sleep(0.01)  # its limit passed: the heartbeat times out here
        return roll

    monkeypatch.setattr(store, "renew_and_roll", overtaken)
    await paused.wait()
    await asyncio.sleep(3 * PAUSED["interval"])
    assert watcher.calls == reports  # the thread renewed it meanwhile: not lapsed
    assert watcher.owned == list(range(PARTITIONS))


@postgres
async def test_a_loop_blocked_past_the_tolerance_loses_its_lease(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pachyderm.fleet")
    watcher = await fleet.watcher("blocked", pause_tolerance=0.6, **PAUSED)
    await eventually(lambda: watcher.owned == list(range(PARTITIONS)))
    silence = Silence(fleet, "blocked", after=2.2)
    block(2.5)
    assert silence.read() > PAUSED["dead_after"]
    await eventually(lambda: watcher.owned == list(range(PARTITIONS)))  # back once it beats
    assert "is still blocked: its lease is let go" in caplog.text


@postgres
async def test_a_second_process_under_a_live_workers_id_is_refused(fleet: Fleet) -> None:
    first = await fleet.watcher("a", info="host=one pid=1")
    await eventually(lambda: first.owned == list(range(PARTITIONS)))
    second = await fleet.member("a", info="host=two pid=2")

    start = time.monotonic()
    with pytest.raises(DuplicateWorkerError, match="another live process") as refused:
        await second.join()
    # It waited for the lease to lapse, as long as a crashed run's could last, no longer.
    assert 2 * DEAD_AFTER <= time.monotonic() - start <= 2 * DEAD_AFTER + INTERVAL + SLACK
    assert (refused.value.worker_id, refused.value.other) == ("a", "host=one pid=1")
    assert "host=one pid=1" in str(refused.value)

    # A watch started under the id is refused alike, and never reports partitions.
    twin = await fleet.watcher("a", info="host=three pid=3")
    assert isinstance(await twin.ended(), DuplicateWorkerError)
    assert twin.owned is None

    # The first run keeps its row and its partitions; joining again is its right.
    assert await holder_info(fleet, "a") == ["host=one pid=1"]
    assert first.running
    assert first.owned == list(range(PARTITIONS))
    await first.membership.join()
    await second.leave()  # deletes nothing: the row is not the second's
    assert await second.live_workers() == ["a"]


@postgres
async def test_a_restarted_worker_gets_its_id_once_the_old_runs_lease_lapses(
    fleet: Fleet,
) -> None:
    # The previous run joined, then crashed: its row stays, its lease runs out.
    crashed = await fleet.member("a", dead_after=0.5, info="host=one pid=1")
    restarted = await fleet.member("a", dead_after=0.5, info="host=one pid=2")
    await crashed.join()
    joining = asyncio.create_task(restarted.join())
    await asyncio.sleep(0.2)
    assert not joining.done(), "joined while the crashed run's lease was current"
    await joining  # within its patience (twice dead_after)
    assert await holder_info(fleet, "a") == ["host=one pid=2"]
    assert await restarted.live_workers() == ["a"]


@postgres
async def test_an_old_run_leaving_leaves_the_new_runs_row(fleet: Fleet) -> None:
    old = await fleet.member("a", info="host=one pid=1")
    await old.join()
    await asyncio.sleep(DEAD_AFTER)  # its lease lapses (it stalled, or lost the database)
    new = await fleet.watcher("a", info="host=one pid=2")
    await eventually(lambda: new.owned == list(range(PARTITIONS)))

    await old.leave()
    assert await holder_info(fleet, "a") == ["host=one pid=2"]
    await asyncio.sleep(2 * INTERVAL)
    assert await old.live_workers() == ["a"]
    assert (new.running, new.owned, new.calls) == (True, list(range(PARTITIONS)), 1)


@postgres
async def test_a_worker_whose_id_was_taken_over_ends_its_watch(fleet: Fleet) -> None:
    # The first run heartbeats slowly: to the second, with a shorter dead_after, it
    # looks as a worker cut off from the database does between two heartbeats.
    first = await fleet.watcher("a", interval=0.5, dead_after=1.5, info="host=one pid=1")
    await eventually(lambda: first.owned == list(range(PARTITIONS)))
    second = await fleet.member("a", interval=0.05, dead_after=0.15, info="host=two pid=2")
    await second.join()  # once the first has been silent for 0.15 s
    assert await holder_info(fleet, "a") == ["host=two pid=2"]

    error = await first.ended(within=2.0)  # at its next heartbeat
    assert isinstance(error, DuplicateWorkerError)
    assert error.other == "host=two pid=2"
    assert "taken over by another process (host=two pid=2)" in str(error)
    await first.membership.leave()
    assert await holder_info(fleet, "a") == ["host=two pid=2"]


async def test_timing_that_would_declare_live_workers_dead_is_refused() -> None:
    with pytest.raises(ValueError, match="dead_after"):
        await PostgresMembership.connect(
            "postgresql://nowhere/x", worker_id="a", heartbeat_interval=1.0, dead_after=1.0
        )


async def test_a_solo_worker_owns_every_partition() -> None:
    solo = SoloMembership("only")
    watcher = Watcher(solo)
    try:
        await eventually(lambda: watcher.owned == list(range(PARTITIONS)))
        assert await solo.live_workers() == ["only"]
        await asyncio.sleep(0.05)
        assert (watcher.running, watcher.calls) == (True, 1)
    finally:
        await watcher.kill()
    await solo.leave()
    await solo.close()


async def test_the_sqlite_schema_has_the_workers_table(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = await SqliteEventStore.open(str(path))
    try:
        assert await store.migrate() >= 2
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(workers)")]
    assert columns == ["worker_id", "info", "started_at", "heartbeat_at", "instance", "fleet"]


@postgres
async def test_workers_and_projection_processes_are_assigned_apart(fleet: Fleet) -> None:
    workers = [await fleet.watcher(f"w{n}") for n in range(2)]
    projectors = [
        Watcher(
            await PostgresMembership.connect(
                fleet.dsn,
                worker_id=f"p{n}",
                schema=fleet.namespace,
                heartbeat_interval=INTERVAL,
                dead_after=DEAD_AFTER,
                fleet="projections",
            )
        )
        for n in range(3)
    ]
    try:
        # Each group splits every partition among its own members only.
        await eventually(lambda: split_as_assigned(workers) and split_as_assigned(projectors))
        assert await workers[0].membership.live_workers() == ["w0", "w1"]
        assert await projectors[0].membership.live_workers() == ["p0", "p1", "p2"]
    finally:
        for watcher in projectors:
            await watcher.kill()
            await watcher.membership.close()
