"""deploy/postgres/roles.sql: the runtime role can do everything a fleet does, and no DDL."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from pachyderm import Ref, StoreError
from pachyderm.fleet import PostgresMembership
from pachyderm.store import Change, Committed, NewEffect, NewEvent, PostgresEventStore

pytestmark = pytest.mark.postgres

ROLES_SQL = Path(__file__).resolve().parents[2] / "deploy" / "postgres" / "roles.sql"


def as_role(dsn: str, role: str) -> str:
    """The DSN with another user (the test server trusts local connections)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


@pytest.fixture
async def roles(postgres_dsn: str, namespace: str) -> AsyncIterator[tuple[str, str]]:
    """roles.sql applied with names of this test's own; everything dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    migrator, runtime = f"migrator_{suffix}", f"runtime_{suffix}"
    sql = ROLES_SQL.read_text()
    sql = re.sub(r"\bpachyderm_migrator\b", migrator, sql)
    sql = re.sub(r"\bpachyderm_runtime\b", runtime, sql)
    sql = re.sub(r"\bpachyderm\b(?=[ ;\n])", namespace, sql)
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(sql)
        yield as_role(postgres_dsn, migrator), as_role(postgres_dsn, runtime)
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{namespace}" CASCADE')
        for role in (runtime, migrator):
            await admin.execute(f"DROP OWNED BY {role}")
            await admin.execute(f"DROP ROLE {role}")
        await admin.close()


async def test_the_runtime_role_runs_a_fleet_and_cannot_change_the_schema(
    roles: tuple[str, str], namespace: str
) -> None:
    migrator_dsn, runtime_dsn = roles
    migrating = await PostgresEventStore.connect(migrator_dsn, schema=namespace)
    try:
        await migrating.migrate()
    finally:
        await migrating.close()

    store = await PostgresEventStore.connect(runtime_dsn, schema=namespace)
    membership = await PostgresMembership.connect(runtime_dsn, schema=namespace, worker_id="w1")
    try:
        ref = Ref.from_key("counter", "c")
        effect = NewEffect(uuid.uuid4(), "effect.mailer", b"x")
        change = Change(ref, 0, "c1", [NewEvent("a", b"")], b"r", [effect])
        assert await store.commit([change]) == [Committed(1)]
        assert (await store.load(ref)).version == 1
        assert await store.versions([ref.id]) == {ref.id: 1}
        assert len(await store.pending_effects()) == 1
        await store.mark_published([effect.effect_id])
        await membership.join()
        assert await membership.live_workers() == ["w1"]
        await membership.leave()
        with pytest.raises(StoreError, match="permission denied"):
            await store.migrate()
        runtime = await asyncpg.connect(runtime_dsn)
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await runtime.execute(f'DROP TABLE "{namespace}".events')
        finally:
            await runtime.close()
    finally:
        await membership.close()
        await store.close()
