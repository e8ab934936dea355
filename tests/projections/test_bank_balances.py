"""The example read model (examples.bank_balances) over committed bank events, and rebuilt."""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg
import pytest

from examples import bank, bank_balances
from pachyderm.projections import ProjectionRunner

from ..python_process import ROOT
from . import tally
from .conftest import Backend

pytestmark = pytest.mark.postgres


async def catch_up(backend: Backend) -> None:
    projection = bank_balances.app.projection("bank_balances")
    await backend.cursors.ensure(projection.name, 4)
    for partition in range(4):
        runner = ProjectionRunner(
            bank_balances.app, backend.store, backend.cursors, projection, partition
        )
        while await runner.step():
            pass


class BalancesScript:
    """``python -m examples.bank_balances ACTION`` on the test's namespace."""

    def __init__(self, dsn: str, namespace: str) -> None:
        self.env = {
            **os.environ,
            "PACHYDERM_DATABASE_URL": dsn,
            "PACHYDERM_NAMESPACE": namespace,
        }

    async def __call__(self, action: str) -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "examples.bank_balances",
            action,
            cwd=ROOT,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate()
        assert process.returncode == 0
        return out.decode()


async def test_balances_per_owner_and_the_total(
    postgres: Backend, postgres_dsn: str, namespace: str
) -> None:
    alice_1, alice_2, bob = (bank.account(key).id for key in ("alice-1", "alice-2", "bob"))
    histories = {
        alice_1: [
            bank.Opened(owner="alice"),
            bank.Deposited(amount=100),
            bank.Withdrawn(amount=30),
        ],
        alice_2: [
            bank.Opened(owner="alice"),
            bank.Deposited(amount=5),
            bank.TransferSent(to=bob, amount=5),
        ],
        bob: [
            bank.Opened(owner="bob"),
            bank.TransferReceived(source=alice_2, amount=5),
            bank.TransferSent(to=alice_1, amount=1),
            bank.TransferReturned(target=alice_1, amount=1),
        ],
    }
    for account, events in histories.items():
        for version, event in enumerate(events):
            await tally.commit(
                postgres.store, bank_balances.app, account, version, event, of="account"
            )
    script = BalancesScript(postgres_dsn, namespace)
    assert await script("setup") == ""  # creates the tables
    connection = await asyncpg.connect(postgres_dsn, server_settings={"search_path": namespace})
    try:
        await catch_up(postgres)
        assert await script("show") == "alice: 70\nbob: 5\ntotal: 75\n"
        assert await bank_balances.balances(connection) == {"alice": 70, "bob": 5}
        assert await bank_balances.total(connection) == 75
        assert await postgres.cursors.request_rebuild("bank_balances") == 4
        # The first step clears and resets every cursor (that partition's runner then
        # stops, with nothing done): the second round catches it up too.
        await catch_up(postgres)
        await catch_up(postgres)
        assert await bank_balances.balances(connection) == {"alice": 70, "bob": 5}
    finally:
        await connection.close()
