"""A read model over the bank (``examples.bank``): each owner's balance, and all the money.

``Balances`` is a :class:`~pachyderm.PostgresProjection`: each event's writes and
the cursor commit in one transaction, so the tables are always those of a
prefix of each partition's log, never an event twice. Money on its way between
two accounts (sent, not yet received) is in no balance; it shows up once received
or returned.

    python -m examples.bank_balances setup   # create the tables (PACHYDERM_* settings)
    pachyderm projections examples.bank_balances:app
    python -m examples.bank_balances show    # balances per owner, and the total
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import asyncpg

from examples.bank import (
    Account,
    Deposited,
    Opened,
    TransferReceived,
    TransferReturned,
    TransferSent,
    Withdrawn,
)
from pachyderm import App, PostgresProjection, ProjectionContext, load_settings

TABLES = """
    CREATE TABLE IF NOT EXISTS bank_accounts (account uuid PRIMARY KEY, owner text NOT NULL);
    CREATE TABLE IF NOT EXISTS bank_owners (owner text PRIMARY KEY, balance bigint NOT NULL);
"""
_OPEN = """
    WITH account AS (INSERT INTO bank_accounts (account, owner) VALUES ($1, $2))
    INSERT INTO bank_owners (owner, balance) VALUES ($2, 0) ON CONFLICT (owner) DO NOTHING
"""
_MOVE = """
    UPDATE bank_owners o SET balance = o.balance + $2
      FROM bank_accounts a WHERE a.account = $1 AND o.owner = a.owner
"""


class Balances(PostgresProjection):
    """Balances per owner (``bank_owners``), through each account's owner (``bank_accounts``)."""

    name = "bank_balances"
    events = (Opened, Deposited, Withdrawn, TransferSent, TransferReceived, TransferReturned)

    async def apply(self, event: Any, context: ProjectionContext) -> None:
        connection: asyncpg.Connection = context.connection
        match event:
            case Opened(owner=owner):
                await connection.execute(_OPEN, context.entity_id, owner)
            case (
                Deposited(amount=amount)
                | TransferReceived(amount=amount)
                | TransferReturned(amount=amount)
            ):
                await connection.execute(_MOVE, context.entity_id, amount)
            case Withdrawn(amount=amount) | TransferSent(amount=amount):
                await connection.execute(_MOVE, context.entity_id, -amount)

    async def clear(self, connection: Any) -> None:
        # DELETE, not TRUNCATE: the runtime role (deploy/postgres/roles.sql) may not truncate.
        await connection.execute("DELETE FROM bank_accounts")
        await connection.execute("DELETE FROM bank_owners")


async def balances(connection: asyncpg.Connection) -> dict[str, int]:
    """Each owner's balance, by owner."""
    rows = await connection.fetch("SELECT owner, balance FROM bank_owners ORDER BY owner")
    return {row["owner"]: row["balance"] for row in rows}


async def total(connection: asyncpg.Connection) -> int:
    """All the money in the accounts."""
    found: int = await connection.fetchval("SELECT coalesce(sum(balance), 0) FROM bank_owners")
    return found


app = App([Account], projections=[Balances()])


async def _main(action: str) -> None:
    settings = load_settings()
    connection = await asyncpg.connect(
        settings.database_url.get_secret_value(),
        server_settings={"search_path": settings.namespace},
    )
    try:
        if action == "setup":
            await connection.execute(TABLES)
            return
        for owner, balance in (await balances(connection)).items():
            print(f"{owner}: {balance}")
        print(f"total: {await total(connection)}")
    finally:
        await connection.close()


if __name__ == "__main__":
    if sys.argv[1:] not in (["setup"], ["show"]):
        sys.exit("usage: python -m examples.bank_balances setup|show")
    asyncio.run(_main(sys.argv[1]))
