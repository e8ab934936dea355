"""Suspect batches decided in a forked child (in process: SQLite, the in-process
broker): a redelivered poison that kills or hangs the child is counted and
quarantined while the worker lives on and the partition's other commands are
answered; what the child reports is tested on :func:`survives` itself."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from pachyderm import CommandQuarantinedError, Ref
from pachyderm._wire import Request
from pachyderm.worker import Engine, _isolation
from pachyderm.worker._isolation import Children, HandlerDiedError, first_to_die, survives

from .poison_app import APP, Crash, Lane, Poison, Step
from .test_partition_quarantine import World, switch, world

__all__ = ["switch", "world"]  # the fixtures, shared with the in-process tests


def _loop_forever() -> None:
    while True:
        pass


def _exit() -> None:
    os._exit(0)  # even a clean status: the child never said it survived


def _fail() -> None:
    raise ValueError("a bug: the worker answers it as a failure")


def _crash() -> None:
    raise Crash("escapes Exception: in the worker it would take the worker down")


async def test_a_child_that_returns_or_raises_an_error_survived() -> None:
    assert await survives(lambda: None, 5)
    assert await survives(_fail, 5)


@pytest.mark.parametrize("decide", [_exit, _crash, _loop_forever])
async def test_a_child_that_dies_or_overruns_did_not(decide: object) -> None:
    assert callable(decide)
    started = time.monotonic()
    assert not await survives(decide, 0.3)
    assert time.monotonic() - started < 10  # the looping one was killed, not waited for


@pytest.mark.parametrize("poison", [_exit, _crash, _loop_forever])
async def test_a_child_names_the_step_it_died_in(poison: object) -> None:
    """Steps that return or raise an ordinary error are gone through (an error does not
    end the child's tries: a poison after it is still found there), the one it died or
    overran in is named."""
    assert callable(poison)
    assert await first_to_die([_fail, lambda: None, poison, lambda: None], 0.5) == 2
    assert await first_to_die([poison], 0.5) == 0
    assert await first_to_die([_fail, lambda: None], 5) is None


def _request(ref: Ref, command: object) -> Request:
    return Request(ref, APP.entity_type(ref.type), command, str(uuid.uuid4()))


@pytest.mark.parametrize("mode", ["exit", "hang"])
async def test_a_dead_child_names_the_command_it_died_deciding(
    world: World, switch: Path, mode: str
) -> None:
    """The child decides an entity's commands one at a time, in order: the one it died
    (or overran) deciding is named, not its entity's others, decided before it or never
    reached (nor another entity's). A timer's fire is blamed by its entity (one a call)."""
    ref, other = Lane.ref(str(uuid.uuid4())), Lane.ref(str(uuid.uuid4()))
    requests = [
        _request(ref, Step(1)),
        _request(other, Step(2)),
        _request(ref, Poison(mode, str(switch))),
        _request(ref, Step(3)),
    ]
    with pytest.raises(HandlerDiedError) as raised:
        await Engine(APP, world.store).run(requests, isolate=1.0)
    died, poison = raised.value, requests[2].command_id
    assert (died.culprit, died.command_id) == (ref, poison)
    blamed = [died.blames(r.ref.id, r.command_id) for r in requests]
    assert blamed == [False, False, True, False]
    assert died.blames(ref.id)
    assert not died.blames(other.id)
    assert str(died).startswith(f"deciding command {poison!r} for {ref} killed or hung")
    assert await world.steps(ref) == []  # the child only probes: nothing committed


async def test_no_more_children_at_once_than_the_worker_allows() -> None:
    children = Children(2)
    inside: list[int] = []
    most = 0
    release = asyncio.Event()

    async def isolated() -> None:
        nonlocal most
        async with children.slot(0):
            inside.append(1)
            most = max(most, len(inside))
            await release.wait()
            inside.pop()

    tasks = [asyncio.create_task(isolated()) for _ in range(5)]
    await asyncio.sleep(0.05)
    assert len(inside) == 2  # the other three wait for a child's slot
    release.set()
    await asyncio.gather(*tasks)
    assert most == 2


@pytest.mark.parametrize(("long_wait", "level"), [(1.0, logging.DEBUG), (0.1, logging.WARNING)])
async def test_a_wait_for_a_child_s_slot_is_logged_with_how_long(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, long_wait: float, level: int
) -> None:
    """To trace stalls under churn: a debug line when a suspect batch's child waited for a slot
    (none when one was free), a warning when it waited long."""
    monkeypatch.setattr(_isolation, "LONG_CHILD_WAIT", long_wait)
    children = Children(1)
    release = asyncio.Event()

    async def isolated() -> None:
        async with children.slot(7):
            await release.wait()

    with caplog.at_level(logging.DEBUG, "pachyderm.quarantine"):
        first = asyncio.create_task(isolated())
        await asyncio.sleep(0.01)
        second = asyncio.create_task(isolated())
        await asyncio.sleep(0.2)
        release.set()
        await asyncio.gather(first, second)
    [waited] = [r for r in caplog.records if getattr(r, "event", "") == "quarantine.child_wait"]
    assert waited.levelno == level
    assert getattr(waited, "partition", None) == 7
    assert getattr(waited, "waited", 0) >= 0.15
    assert waited.getMessage().startswith("partition 7: a suspect batch waited 0.")


async def test_a_child_s_slot_is_free_again_before_its_batch_commits(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slot bounds forked children, not suspect batches: held from the fork to the
    child's end, it is free while the worker decides and commits the batch itself
    (held for all of it, redelivered batches queued under churn for slots no child
    used: session 18's poison benchmark)."""
    children = Children(1)
    committing, may_commit = asyncio.Event(), asyncio.Event()
    commit = world.store.commit

    async def held_commit(*args: Any, **kwargs: Any) -> Any:
        committing.set()
        await may_commit.wait()
        return await commit(*args, **kwargs)

    monkeypatch.setattr(world.store, "commit", held_commit)
    engine = Engine(APP, world.store, children=children)
    ref = Lane.ref(str(uuid.uuid4()))
    batch = asyncio.create_task(engine.run([_request(ref, Step(1))], isolate=5.0))
    await asyncio.wait_for(committing.wait(), 10)
    async with asyncio.timeout(1):  # its child has ended: another may fork
        async with children.slot(0):
            pass
    may_commit.set()
    await batch
    assert await world.steps(ref) == [1]


def _children() -> set[str]:
    """This process's children (Linux: forked from its main thread)."""
    return set(Path(f"/proc/self/task/{os.getpid()}/children").read_text().split())


async def test_a_cancelled_wait_leaves_no_child_behind() -> None:
    children = _children()
    waiting = asyncio.create_task(survives(_loop_forever, 60))
    await asyncio.sleep(0.2)
    assert len(_children() - children) == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert _children() - children == set()  # killed and reaped


async def test_a_child_holds_none_of_the_workers_sockets() -> None:
    """Else a worker dying while a child runs would leave its broker connection open, and
    the broker would hand none of its deliveries back."""
    mine, peer = socket.socketpair()
    with peer:
        waiting = asyncio.create_task(survives(_loop_forever, 5))
        await asyncio.sleep(0.3)  # the child has forked
        mine.close()  # as the worker's death closes its sockets
        peer.settimeout(2)
        assert peer.recv(1) == b""  # closed for good: the child holds no copy
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting


_ORPHANING = """
import asyncio, os, sys
from pachyderm.worker._isolation import survives

def loop_forever():
    while True:
        pass

async def main():
    asyncio.create_task(survives(loop_forever, 0.5))
    await asyncio.sleep(0.3)
    children = open(f"/proc/self/task/{os.getpid()}/children").read().split()
    print(*children, flush=True)
    os._exit(0)  # the worker dies, its child running

asyncio.run(main())
"""


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (ended, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_a_child_ends_by_itself_once_its_worker_is_dead() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _ORPHANING, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    [child] = out.split()
    deadline = time.monotonic() + 30
    while _running(int(child)):  # its alarm ends it (limit + 1 s)
        assert time.monotonic() < deadline, "the orphaned child lives on"
        await asyncio.sleep(0.1)


_REPORTING_TO_THE_DEAD = """
import asyncio, os, time
from pachyderm.worker._isolation import survives

async def main():
    asyncio.create_task(survives(lambda: time.sleep(0.5), 5))
    await asyncio.sleep(0.2)
    os._exit(0)  # the worker dies; its child's report then finds no reader

asyncio.run(main())
print("the child ran the worker's code on")
"""


async def test_a_child_whose_worker_died_leaves_quietly_after_its_decision() -> None:
    """Its report fails (a broken pipe): the child still leaves at once, rather than
    unwinding into its copy of the worker's stack (which then ran on without a loop)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _REPORTING_TO_THE_DEAD,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # The child keeps the standard streams: they close once it has ended too.
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert (out, err) == (b"", b"")


@pytest.mark.parametrize("mode", ["exit", "hang", "crash"])
async def test_a_redelivered_poison_is_quarantined_and_its_worker_lives(
    world: World, switch: Path, mode: str
) -> None:
    """A worker died with the poison and 40 other commands of its partition in hand;
    the next one decides them in children: the poison's chunk dies, then the poison
    alone, twice (its 2nd and 3rd attempts), and it is quarantined; the worker
    survives it all, and every other command is answered, none counted in the end."""
    lanes = [Lane.ref(str(uuid.uuid4())) for _ in range(40)]
    poisoned = Lane.ref(str(uuid.uuid4()))
    before = [await world.send(ref, Step(n)) for n, ref in enumerate(lanes[:20])]
    command_id = await world.send(poisoned, Poison(mode, str(switch)))
    after = [await world.send(ref, Step(n)) for n, ref in enumerate(lanes[20:], start=20)]
    later = await world.send(poisoned, Step(9))
    dead = await world.worker()
    await asyncio.wait_for(dead.inbox.take(100), 2)
    await dead.inbox.close()  # it died with them in hand: all are redelivered

    assert await world.live(await world.worker(isolation=0.5))

    answer = await world.answer(command_id)
    assert isinstance(answer, CommandQuarantinedError)
    assert answer.attempts == 3
    sent = before + after
    assert [await world.answer(c) for c in sent] == [(1, {"steps": [n]}) for n in range(40)]
    assert await world.steps(poisoned) == []  # Step(9) parked behind it
    assert later not in world.replies
    keys = [(ref.id, c) for ref, c in zip(lanes, sent, strict=True)]
    assert await world.quarantine.attempts(keys) == {}
    assert [row.command_id for row in await world.quarantine.quarantined()] == [command_id]
