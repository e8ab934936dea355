"""Record the history of version 1 of the bank (examples/bank.py) that the evolution
tests read: ``python -m tests.evolution.record_bank_v1`` rewrites
tests/evolution/data/bank_v1.jsonl.

Thirty accounts on a throwaway SQLite store, a snapshot every 4 events, exported
with ``pachyderm export`` as a user exports production: opened, deposits,
withdrawals, transfers between them and one to an account never opened (the money
comes back), so every event type of version 1 is in it.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from examples import bank
from pachyderm import embedded
from pachyderm.cli import main
from pachyderm.worker import WorkerOptions

RECORDED = Path(__file__).parent / "data" / "bank_v1.jsonl"
ACCOUNTS = 30
SNAPSHOT_EVERY = 4


async def run_bank(database: str) -> None:
    options = WorkerOptions(snapshot_every=SNAPSHOT_EVERY)
    async with embedded(bank.app, database, options=options) as fleet:
        call = fleet.client.call
        for number in range(ACCOUNTS):
            account = bank.account(f"customer-{number}")
            await call(account, bank.Open(owner=f"Customer {number}"))
            for deposit in range(number % 7):
                await call(account, bank.Deposit(amount=100 + deposit))
        for number in range(0, ACCOUNTS, 3):
            if number % 7:
                account = bank.account(f"customer-{number}")
                target = bank.account(f"customer-{(number + 1) % ACCOUNTS}")
                await call(account, bank.Withdraw(amount=1))
                await call(account, bank.Transfer(to=target.id, amount=50))
        # A transfer to an account never opened: the money comes back.
        source, nobody = bank.account("customer-6"), bank.account("never-opened")
        before = await fleet.client.query(source, bank.Balance())
        await call(source, bank.Transfer(to=nobody.id, amount=25))
        for _ in range(100):
            if await fleet.client.query(source, bank.Balance()) == before:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("the returned transfer never came back")


def record(output: Path = RECORDED) -> None:
    with tempfile.TemporaryDirectory() as directory:
        database = f"sqlite:///{Path(directory) / 'bank_v1.db'}"
        asyncio.run(run_bank(database))
        argv = ["--database-url", database, "export", "examples.bank", "--output", str(output)]
        if main(argv) != 0:
            sys.exit("the export failed")


if __name__ == "__main__":
    record()
