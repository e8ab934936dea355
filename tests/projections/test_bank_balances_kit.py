"""Kit tests of the example read model (examples.bank_balances): given bank events, then
the balances per owner and the total, on a real PostgreSQL (given_log, no fleet)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from examples.bank import (
    Deposited,
    Opened,
    TransferReceived,
    TransferReturned,
    TransferSent,
    Withdrawn,
    account,
)
from examples.bank_balances import TABLES, Balances, app, balances, total
from pachyderm import ProjectionContext, Ref
from pachyderm.testing import given_log

pytestmark = pytest.mark.postgres

ALICE_1, ALICE_2, BOB, CAROL = (account(key) for key in ("alice-1", "alice-2", "bob", "carol"))
HISTORIES: dict[Ref, list[Any]] = {
    ALICE_1: [Opened(owner="alice"), Deposited(amount=100), Withdrawn(amount=30)],
    ALICE_2: [Opened(owner="alice"), Deposited(amount=5), TransferSent(to=BOB.id, amount=5)],
    BOB: [
        Opened(owner="bob"),
        TransferReceived(source=ALICE_2.id, amount=5),
        TransferSent(to=CAROL.id, amount=2),
        TransferReturned(target=CAROL.id, amount=2),
        Deposited(amount=40),
    ],
    CAROL: [Opened(owner="carol")],
}


@pytest.fixture
async def connection(postgres_dsn: str, namespace: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a schema of the test's own, holding the read model's tables."""
    connection = await asyncpg.connect(postgres_dsn)
    try:
        await connection.execute(f'CREATE SCHEMA "{namespace}"')
        await connection.execute(f'SET search_path TO "{namespace}"')
        await connection.execute(TABLES)
        yield connection
    finally:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{namespace}" CASCADE')
        await connection.close()


@pytest.mark.parametrize(("partitions", "batch_size"), [(1, 500), (3, 2), (4, 1)])
async def test_balances_per_owner_and_the_total(
    connection: asyncpg.Connection, partitions: int, batch_size: int
) -> None:
    projected = await given_log(app, HISTORIES, partitions=partitions).project(
        Balances(), connection, batch_size=batch_size
    )
    assert await balances(connection) == {"alice": 70, "bob": 45, "carol": 0}
    assert await total(connection) == 115
    assert sum(projected.positions.values()) == sum(len(e) for e in HISTORIES.values())


async def test_money_in_flight_is_in_no_balance_until_received(
    connection: asyncpg.Connection,
) -> None:
    await given_log(
        app,
        [
            (ALICE_1, [Opened(owner="alice"), Deposited(amount=10)]),
            (BOB, [Opened(owner="bob")]),
            (ALICE_1, [TransferSent(to=BOB.id, amount=4)]),
        ],
    ).project(Balances(), connection)
    assert await balances(connection) == {"alice": 6, "bob": 0}
    assert await total(connection) == 6


async def test_a_dsn_gives_the_projection_a_connection_of_its_own(
    connection: asyncpg.Connection, postgres_dsn: str, namespace: str
) -> None:
    await given_log(app, {CAROL: [Opened(owner="carol"), Deposited(amount=9)]}).project(
        app.projection("bank_balances"), dsn=postgres_dsn, schema=namespace
    )
    assert await balances(connection) == {"carol": 9}


async def test_a_failing_batch_leaves_none_of_its_writes(connection: asyncpg.Connection) -> None:
    class Strict(Balances):
        """Balances that refuses to overdraw: the batch fails after its first write."""

        async def apply(self, event: Any, context: ProjectionContext) -> None:
            await super().apply(event, context)
            negative = await context.connection.fetchval(
                "SELECT count(*) FROM bank_owners WHERE balance < 0"
            )
            if negative:
                raise ValueError("overdrawn")

    histories = {
        ALICE_1: [
            Opened(owner="alice"),
            Deposited(amount=10),
            Deposited(amount=5),
            Withdrawn(amount=99),
        ]
    }
    with pytest.raises(ValueError, match="overdrawn"):
        await given_log(app, histories).project(Strict(), connection, batch_size=2)
    # The first batch committed; of the second, not even the deposit before the failure.
    assert await balances(connection) == {"alice": 10}
