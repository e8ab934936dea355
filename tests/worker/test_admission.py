"""The worker-wide cap on commands in flight: room granted in turn, in fair shares, never
beyond the limit; given back with the next batch, on close, or when a wait is cancelled."""

from __future__ import annotations

import asyncio

import pytest

from pachyderm.transport import InProcessTransport, Message, Topology
from pachyderm.worker._admission import Admission, AdmittedInbox


async def test_a_lone_partition_may_use_the_whole_limit() -> None:
    admission = Admission(10)
    assert await admission.acquire(0, 256) == 10
    assert admission.in_flight == 10


async def test_beyond_the_limit_a_partition_waits_until_room_is_given_back() -> None:
    admission = Admission(4)
    assert await admission.acquire(0, 4) == 4
    waiting = asyncio.create_task(admission.acquire(1, 3))
    await asyncio.sleep(0)
    assert not waiting.done()
    admission.release(0, 1)
    assert await waiting == 1  # room for one: it takes what there is
    assert admission.in_flight == 4


async def test_partitions_asking_together_get_equal_shares_in_turn() -> None:
    admission = Admission(6)
    assert await admission.acquire(0, 6) == 6
    asking = [asyncio.create_task(admission.acquire(p, 100)) for p in (1, 2, 3)]
    await asyncio.sleep(0)
    admission.release(0, 6)
    # Three partitions ask, none holds: a share is 6 // 3.
    assert [await task for task in asking] == [2, 2, 2]


async def test_a_newcomer_does_not_pass_those_waiting() -> None:
    admission = Admission(2)
    assert await admission.acquire(0, 2) == 2
    first = asyncio.create_task(admission.acquire(1, 2))
    await asyncio.sleep(0)
    admission.release(0, 1)  # one free: the first in line takes it
    assert await first == 1
    late = asyncio.create_task(admission.acquire(2, 1))
    await asyncio.sleep(0)
    assert not late.done()
    admission.release(0, 1)
    assert await late == 1


async def test_a_withdrawn_partition_stops_waiting_with_no_room() -> None:
    admission = Admission(1)
    assert await admission.acquire(0, 1) == 1
    waiting = asyncio.create_task(admission.acquire(1, 1))
    await asyncio.sleep(0)
    admission.withdraw(1)
    assert await waiting == 0
    assert admission.in_flight == 1


async def test_a_cancelled_wait_takes_no_room() -> None:
    admission = Admission(1)
    assert await admission.acquire(0, 1) == 1
    waiting = asyncio.create_task(admission.acquire(1, 1))
    await asyncio.sleep(0)
    waiting.cancel()
    admission.release(0, 1)
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert admission.in_flight == 0


def test_giving_back_more_than_held_is_a_bug() -> None:
    with pytest.raises(ValueError, match="more room than it holds"):
        Admission(2).release(0, 1)


async def test_admitted_batches_fit_the_room_and_keep_the_order() -> None:
    transport = InProcessTransport(Topology(partitions=1))
    await transport.start()
    try:
        for n in range(5):
            await transport.publish_command(Message(str(n).encode(), routing_key="e"))
        admission = Admission(2)
        inbox = AdmittedInbox(await transport.open_inbox(0, prefetch=10), admission)
        first = await inbox.take(10)
        assert [d.message.body for d in first] == [b"0", b"1"]
        assert admission.in_flight == 2
        await inbox.ack(first)
        second = await inbox.take(10)  # the first batch's room came back
        assert [d.message.body for d in second] == [b"2", b"3"]
        await inbox.close()
        assert admission.in_flight == 0
        assert await inbox.take(10) == []
    finally:
        await transport.close()
