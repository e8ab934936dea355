"""The membership store contract: PostgreSQL's ``workers`` table and the simulation's
in-memory store run these same tests.

Invariant: what :class:`~pachyderm.fleet._leased.LeasedMembership` relies on
(see :mod:`pachyderm.fleet._store`): leases judged by the store's clock, one
instance per worker id, members listed with their own fleet only. A store that
passes it can stand in for PostgreSQL in the simulation of a fleet.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest

from ..fleet._store import MembershipStore

MembershipStoreFactory = Callable[[], Awaitable[MembershipStore]]
"""The ``open_membership_store`` fixture's value: stores sharing one (empty) namespace."""

LEASE = 0.5  # long enough for a loaded machine's round trips, short enough to wait out


class MembershipStoreContract:
    """Tests every membership store must pass.

    Subclass it under a name pytest collects and define ``open_membership_store``,
    a :data:`MembershipStoreFactory`: each call returns a store on the same
    namespace, which is empty when the test starts (the fixture closes them).
    """

    @pytest.fixture
    async def store(self, open_membership_store: MembershipStoreFactory) -> MembershipStore:
        return await open_membership_store()

    async def test_a_free_worker_id_is_claimed_and_listed(self, store: MembershipStore) -> None:
        before = await store.roll("worker", LEASE)
        assert before.members == ()
        assert await store.claim("b", uuid.uuid4(), info="two", fleet="worker", lease=LEASE)
        assert await store.claim("a", uuid.uuid4(), info="one", fleet="worker", lease=LEASE)
        roll = await store.roll("worker", LEASE)
        assert roll.workers == ["a", "b"]
        assert all(before.now <= member.started <= roll.now for member in roll.members)

    async def test_a_live_holders_id_is_refused_to_another_instance(
        self, store: MembershipStore
    ) -> None:
        first = uuid.uuid4()
        assert await store.claim("a", first, info="one", fleet="worker", lease=LEASE)
        assert not await store.claim("a", uuid.uuid4(), info="two", fleet="worker", lease=LEASE)
        holder = await store.holder("a")
        assert holder is not None
        assert holder.info == "one"
        assert 0 <= holder.silent < LEASE
        assert await store.holder("nobody") is None
        # Its own instance may claim again: a new run's start.
        started = (await store.roll("worker", LEASE)).members[0].started
        assert await store.claim("a", first, info="one", fleet="worker", lease=LEASE)
        assert (await store.roll("worker", LEASE)).members[0].started >= started

    async def test_a_lapsed_lease_is_taken_over_and_the_old_instance_loses_it(
        self, store: MembershipStore
    ) -> None:
        old, new = uuid.uuid4(), uuid.uuid4()
        assert await store.claim("a", old, info="old", fleet="worker", lease=LEASE)
        await asyncio.sleep(LEASE * 1.5)
        assert (await store.roll("worker", LEASE)).members == ()  # dead by the store's clock
        assert await store.claim("a", new, info="new", fleet="worker", lease=LEASE)
        assert not await store.renew("a", old, info="old", fleet="worker")
        await store.leave("a", old)  # deletes nothing: the row is the new instance's
        holder = await store.holder("a")
        assert holder is not None
        assert holder.info == "new"

    async def test_renewing_keeps_a_lease_current_and_recreates_a_pruned_row(
        self, store: MembershipStore
    ) -> None:
        instance = uuid.uuid4()
        assert await store.claim("a", instance, info="one", fleet="worker", lease=LEASE)
        for _ in range(3):
            await asyncio.sleep(LEASE / 2)
            assert await store.renew("a", instance, info="one", fleet="worker")
        assert (await store.roll("worker", LEASE)).workers == ["a"]
        await store.leave("a", instance)
        assert await store.holder("a") is None
        assert await store.renew("a", instance, info="one", fleet="worker")
        assert (await store.roll("worker", LEASE)).workers == ["a"]

    async def test_members_are_listed_with_their_own_fleet_only(
        self, store: MembershipStore
    ) -> None:
        assert await store.claim("w", uuid.uuid4(), info="", fleet="worker", lease=LEASE)
        assert await store.claim("p", uuid.uuid4(), info="", fleet="projections", lease=LEASE)
        assert (await store.roll("worker", LEASE)).workers == ["w"]
        assert (await store.roll("projections", LEASE)).workers == ["p"]

    async def test_leaving_removes_only_the_own_instances_row(self, store: MembershipStore) -> None:
        instance = uuid.uuid4()
        assert await store.claim("a", instance, info="", fleet="worker", lease=LEASE)
        await store.leave("a", uuid.uuid4())
        assert (await store.roll("worker", LEASE)).workers == ["a"]
        await store.leave("a", instance)
        assert (await store.roll("worker", LEASE)).workers == []

    async def test_pruning_deletes_only_long_silent_rows(self, store: MembershipStore) -> None:
        assert await store.claim("gone", uuid.uuid4(), info="", fleet="worker", lease=LEASE)
        await asyncio.sleep(LEASE)
        assert await store.claim("here", uuid.uuid4(), info="", fleet="worker", lease=LEASE)
        await store.prune(LEASE / 2)
        assert await store.holder("gone") is None
        assert await store.holder("here") is not None

    async def test_members_sharing_a_namespace_see_one_another(
        self, open_membership_store: MembershipStoreFactory
    ) -> None:
        one, two = await open_membership_store(), await open_membership_store()
        assert await one.claim("a", uuid.uuid4(), info="", fleet="worker", lease=LEASE)
        assert await two.claim("b", uuid.uuid4(), info="", fleet="worker", lease=LEASE)
        assert (await one.roll("worker", LEASE)).workers == ["a", "b"]
        assert (await two.roll("worker", LEASE)).workers == ["a", "b"]

    async def test_a_heartbeat_renews_and_lists_in_one_query(self, store: MembershipStore) -> None:
        mine, other = uuid.uuid4(), uuid.uuid4()
        assert await store.claim("a", mine, info="", fleet="worker", lease=LEASE)
        assert await store.claim("b", other, info="", fleet="worker", lease=LEASE)
        assert await store.claim("p", uuid.uuid4(), info="", fleet="projections", lease=LEASE)
        started = {m.worker_id: m.started for m in (await store.roll("worker", LEASE)).members}
        await asyncio.sleep(LEASE * 0.75)
        roll = await store.renew_and_roll("a", mine, info="", fleet="worker", lease=LEASE)
        assert roll is not None
        assert roll.workers == ["a", "b"]
        assert {m.worker_id: m.started for m in roll.members} == started  # renewing is no start
        await asyncio.sleep(LEASE * 0.5)  # b lapsed, a renewed: only a is live
        assert (await store.roll("worker", LEASE)).workers == ["a"]
        # Another instance's row is neither renewed nor listed for it.
        assert await store.renew_and_roll("a", other, info="", fleet="worker", lease=LEASE) is None
        # A row gone (pruned) comes back, listed as just started.
        await store.leave("a", mine)
        again = await store.renew_and_roll("a", mine, info="", fleet="worker", lease=LEASE)
        assert again is not None
        assert again.workers == ["a"]
        assert again.members[0].started >= roll.now
