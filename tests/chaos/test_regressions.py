"""The smallest reproducers of what the chaos runs found: on the embedded fleet (the same
engine and partition code as a fleet of workers, without services) where they can be."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from chaos.fleet import client_ports
from examples import bank
from pachyderm import (
    App,
    CallTimeoutError,
    Entity,
    HandleResult,
    Ref,
    StoreError,
    TransportUnavailableError,
    embedded,
)
from pachyderm.store import PostgresEventStore
from pachyderm.transport import Message

pytestmark = pytest.mark.chaos


async def test_a_retried_command_that_applied_gets_its_reply_not_a_new_decision() -> None:
    # Found by kill_anywhere: a command applied, its worker died before acking,
    # and the redelivery, decided again on the new state, was answered
    # "rejected". Fixed in 9185561 (every answer is recorded with its id).
    async with embedded(bank.app) as fleet:
        alice = bank.account("alice")
        opened = await fleet.client.call(alice, bank.Open(owner="A"), command_id="open-1")
        assert await fleet.client.call(alice, bank.Open(owner="A"), command_id="open-1") == opened
        await fleet.client.call(alice, bank.Deposit(amount=100))
        paid = await fleet.client.call(alice, bank.Withdraw(amount=80), command_id="pay-1")
        assert await fleet.client.call(alice, bank.Withdraw(amount=80), command_id="pay-1") == paid


async def test_a_partition_keeps_serving_after_a_reply_could_not_be_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found by broker_connection_closed: publishing the replies of a committed
    # batch failed, the error escaped the partition's task, and the partition
    # was never consumed again while its worker still owned it. Fixed in
    # 9185561 (a partition survives a failed settle).
    async with embedded(bank.app, partitions=1) as fleet:
        send_replies = fleet.transport.publish_replies
        broker_away = True

        async def flaky_replies(messages: Sequence[Message]) -> None:
            if broker_away:
                raise TransportUnavailableError("the broker went away")
            await send_replies(messages)

        monkeypatch.setattr(fleet.transport, "publish_replies", flaky_replies)
        alice, bob = bank.account("alice"), bank.account("bob")
        with pytest.raises(CallTimeoutError):
            await fleet.client.call(alice, bank.Open(owner="A"), command_id="open-a", timeout=1)
        broker_away = False
        # The same partition answers again, and the retry gets the committed answer.
        assert await fleet.client.call(bob, bank.Open(owner="B"), timeout=5) == {
            "owner": "B",
            "balance": 0,
        }
        retried = await fleet.client.call(alice, bank.Open(owner="A"), command_id="open-a")
        assert retried == {"owner": "A", "balance": 0}


@dataclass(frozen=True)
class Claim:
    pass


@dataclass(frozen=True)
class Claimed:
    pass


class Ticket(Entity[dict[str, bool]]):
    """Claimed once; its handler refuses to run on a claimed ticket by raising."""

    commands = (Claim,)
    events = (Claimed,)

    def init(self) -> dict[str, bool]:
        return {"claimed": False}

    def handle(self, message: Any, state: dict[str, bool]) -> HandleResult:
        if state["claimed"]:
            raise RuntimeError("claimed twice")  # trusting that a command applies once
        return [Claimed()]

    def update(self, event: Any, state: dict[str, bool]) -> dict[str, bool]:
        return {"claimed": True}


async def test_a_retried_command_that_applied_gets_its_reply_even_if_its_handler_now_raises() -> (
    None
):
    async with embedded(App([Ticket])) as fleet:
        ticket = Ticket.ref("t-1")
        claimed = await fleet.client.call(ticket, Claim(), command_id="claim-1")
        assert await fleet.client.call(ticket, Claim(), command_id="claim-1") == claimed


@pytest.mark.postgres
async def test_a_terminated_postgresql_backend_is_a_store_outage_never_an_internal_error(
    postgres_dsn: str, namespace: str
) -> None:
    # Found by postgres_backends_terminated in the long chaos run (python -m chaos):
    # a command was told `failed` although its batch had committed (refused_applied).
    store = await PostgresEventStore.connect(postgres_dsn, schema=namespace, max_size=1)
    await store.migrate()
    admin = await asyncpg.connect(postgres_dsn)
    untranslated = []
    try:
        # How many loop iterations pass between the backend's farewell and the next
        # query decides what the query meets: try a few.
        for iterations in range(5):
            async with store._pool.acquire() as connection:
                backend = await connection.fetchval("SELECT pg_backend_pid()")
            await admin.execute("SELECT pg_terminate_backend($1)", backend)
            # A busy worker: the backend's FATAL message and the socket's EOF both
            # arrive while the event loop is not looking.
            time.sleep(0.3)  # noqa: ASYNC251
            for _ in range(iterations):
                await asyncio.sleep(0)
            try:
                await store.load(Ref("counter", uuid.uuid4()))
            except StoreError:
                pass  # an outage the worker waits out: what it should be
            except Exception as error:  # what escapes is the finding
                untranslated.append((iterations, repr(error)))
    finally:
        await admin.close()
        await store.drop_namespace()
        await store.close()
    assert untranslated == []


def test_an_ended_worker_has_no_client_ports() -> None:
    """A poison may end the victim of a backend termination before its ports are read:
    nothing to terminate then, and the run goes on (it once ended the whole run)."""
    ended = subprocess.Popen(["true"])
    ended.wait()
    assert client_ports(ended.pid, 5432) == set()
    assert client_ports(os.getpid(), 1) == set()  # a live process, no such connection
