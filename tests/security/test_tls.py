"""TLS to PostgreSQL and RabbitMQ, through the product's own code paths.

The URLs come from settings (secret files, or the environment of a worker
process) exactly as docs/security.md describes them; the servers are private
instances on loopback that speak TLS only (see ``services.py``):

- PostgreSQL accepts TCP connections over TLS only, with a password.
- RabbitMQ listens for ``amqps`` only and requires a client certificate signed
  by the test's authority (mutual TLS).

Each refusal must surface as a :class:`~pachyderm.PachydermError` whose message
says what went wrong, and no error or log line may show the password.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import traceback
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from examples import counter
from pachyderm import (
    PachydermError,
    Ref,
    Settings,
    StoreError,
    StoreUnavailableError,
    TransportError,
    TransportUnavailableError,
    load_settings,
)
from pachyderm.cli._runtime import broker
from pachyderm.store import Change, Committed, NewEvent, PostgresEventStore, open_store
from pachyderm.testing import process_fleet
from pachyderm.testing._transport_contract import collect
from pachyderm.transport import Message, RabbitMQTransport, Topology

from .certificates import TlsFiles
from .services import TlsPostgres, TlsRabbitMQ

ROOT = Path(__file__).resolve().parents[2]

postgres = pytest.mark.postgres
rabbitmq = pytest.mark.rabbitmq


@pytest.fixture(autouse=True)
def every_log_record(caplog: pytest.LogCaptureFixture) -> None:
    """Capture every level: aio-pika and aiormq name the URL at DEBUG."""
    caplog.set_level(logging.DEBUG)


def settings_from_secret_files(
    folder: Path, monkeypatch: pytest.MonkeyPatch, **urls: str
) -> Settings:
    """Settings as a deployment gets them: one secret file per URL (docs/security.md)."""
    secrets = folder / "secrets"
    secrets.mkdir()
    for name, url in urls.items():
        monkeypatch.delenv(f"PACHYDERM_{name.upper()}", raising=False)
        (secrets / f"PACHYDERM_{name.upper()}").write_text(url)
    monkeypatch.setenv("PACHYDERM_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("PACHYDERM_NAMESPACE", f"tls_{uuid.uuid4().hex[:12]}")
    return load_settings()


def assert_clear(
    error: BaseException,
    kind: type[PachydermError],
    says: str,
    secret: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``error`` is a ``kind`` whose message matches ``says`` (a regular expression,
    any case); neither it (with its whole chain of causes, as a traceback would show
    it) nor any log line shows ``secret``."""
    assert isinstance(error, kind), f"{type(error).__name__}: {error}"
    assert re.search(says, str(error), re.IGNORECASE), str(error)
    shown = "".join(traceback.format_exception(error))
    assert secret not in shown
    assert secret not in repr(error)
    assert secret not in caplog.text


def assert_not_retryable(error: PachydermError) -> None:
    """A certificate that does not verify is a setting to fix, not an outage to wait out."""
    assert not isinstance(error, StoreUnavailableError | TransportUnavailableError), error


async def refusal(attempt: Awaitable[None]) -> PachydermError:
    """The error ``attempt`` (connecting, then closing what it opened) raises."""
    with pytest.raises(PachydermError) as raised:
        async with asyncio.timeout(20):
            await attempt
    return raised.value


async def store_opened(url: str) -> None:
    """Open the store (the product's connect) on ``url``; close it if it opened."""
    store = await open_store(url, namespace=f"tls_{uuid.uuid4().hex[:12]}")
    await store.close()


async def transport_started(url: str) -> None:
    """Start a transport (the product's connect) on ``url``; close it if it started."""
    transport = RabbitMQTransport(url, Topology(f"tls_{uuid.uuid4().hex[:12]}", 1))
    try:
        await transport.start()
    finally:
        await transport.close()


# -- PostgreSQL ---------------------------------------------------------------------


@postgres
async def test_postgres_verify_full_with_the_right_authority_commits_over_tls(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tls: TlsFiles,
    tls_postgres: TlsPostgres,
    secret: str,
) -> None:
    url = tls_postgres.url(secret, sslmode="verify-full", sslrootcert=str(tls.authority.cert))
    settings = settings_from_secret_files(tmp_path, monkeypatch, database_url=url)
    store = await open_store(settings.database_url.get_secret_value(), namespace=settings.namespace)
    assert isinstance(store, PostgresEventStore)
    try:
        await store.migrate()
        ref = Ref.from_key("counter", "tls")
        outcome = await store.commit([Change(ref, 0, "c1", [NewEvent("increased", b"\x01")])])
        assert outcome == [Committed(1)]
        assert [event.data for event in (await store.load(ref)).events] == [b"\x01"]
        # The server's side: every session of the store's pool is encrypted.
        check = await asyncpg.connect(url)
        try:
            sessions = await check.fetch(
                "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)"
                " WHERE a.application_name = 'pachyderm'"
            )
        finally:
            await check.close()
        assert sessions
        assert all(session["ssl"] for session in sessions)
    finally:
        await store.drop_namespace()
        await store.close()


@postgres
async def test_postgres_an_unknown_authority_is_refused(
    tls: TlsFiles, tls_postgres: TlsPostgres, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = tls_postgres.url(secret, sslmode="verify-full", sslrootcert=str(tls.other_authority.cert))
    error = await refusal(store_opened(url))
    assert_clear(error, StoreError, "certificate verify failed", secret, caplog)
    assert_not_retryable(error)


@postgres
async def test_postgres_verify_full_refuses_a_certificate_for_another_host(
    tls: TlsFiles, tls_postgres: TlsPostgres, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The server's certificate names 127.0.0.1 only; "localhost" is the same
    # machine, but not the name the certificate vouches for.
    url = tls_postgres.url(
        secret, host="localhost", sslmode="verify-full", sslrootcert=str(tls.authority.cert)
    )
    error = await refusal(store_opened(url))
    assert_clear(error, StoreError, "mismatch", secret, caplog)
    assert_not_retryable(error)


@postgres
async def test_postgres_a_plain_connection_is_refused(
    tls_postgres: TlsPostgres, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    error = await refusal(store_opened(tls_postgres.url(secret, sslmode="disable")))
    assert_clear(error, StoreError, "no encryption", secret, caplog)


@postgres
async def test_postgres_without_sslmode_encrypts_but_verifies_nothing(
    tls_postgres: TlsPostgres, secret: str
) -> None:
    """asyncpg's default (``prefer``) connects to a server whose certificate no
    authority of ours signed: why docs/security.md says to set sslmode."""
    await store_opened(tls_postgres.url(secret))


# -- RabbitMQ -----------------------------------------------------------------------


def mutual(tls: TlsFiles, server: TlsRabbitMQ, secret: str, **overrides: str) -> str:
    """The amqps URL with the right authority and the client's certificate, unless
    ``overrides`` says otherwise (an empty value leaves that option out)."""
    query = {
        "cafile": str(tls.authority.cert),
        "certfile": str(tls.client.cert),
        "keyfile": str(tls.client.key),
        **overrides,
    }
    return server.url(secret, **{key: value for key, value in query.items() if value})


@rabbitmq
async def test_rabbitmq_mutual_tls_publishes_and_consumes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tls: TlsFiles,
    tls_rabbitmq: TlsRabbitMQ,
    secret: str,
) -> None:
    url = mutual(tls, tls_rabbitmq, secret)
    settings = settings_from_secret_files(tmp_path, monkeypatch, amqp_url=url)
    settings = settings.model_copy(update={"partitions": 1})
    async with broker(settings, "tls-test") as transport:
        try:
            inbox = await transport.open_inbox(0, prefetch=1)
            await transport.publish_command(Message(b"over tls", routing_key="k", message_id="m"))
            taken = await collect(inbox, 1)
            assert [delivery.message.body for delivery in taken] == [b"over tls"]
            await inbox.ack(taken)
            await inbox.close()
        finally:
            await transport.delete_topology()


Overrides = Callable[[TlsFiles], dict[str, str]]


@rabbitmq
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            (lambda tls: {"cafile": str(tls.other_authority.cert)}, "certificate verify failed"),
            id="unknown-authority",
        ),
        # TLS 1.3: the client's side of the handshake is done before the broker
        # checks the client's certificate, so its refusal reaches the client as an
        # alert or, as often, as a bare reset of the connection.
        pytest.param(
            (lambda tls: {"certfile": "", "keyfile": ""}, "certificate required|connection reset"),
            id="no-client-certificate",
        ),
        pytest.param(
            (
                lambda tls: {
                    "certfile": str(tls.rogue_client.cert),
                    "keyfile": str(tls.rogue_client.key),
                },
                "unknown ca|connection reset",
            ),
            id="client-certificate-of-another-authority",
        ),
    ],
)
async def test_rabbitmq_refuses(
    tls: TlsFiles,
    tls_rabbitmq: TlsRabbitMQ,
    secret: str,
    caplog: pytest.LogCaptureFixture,
    case: tuple[Overrides, str],
) -> None:
    """Each case: what the URL changes (from the mutual-TLS one), what the error says."""
    overrides, says = case
    error = await refusal(transport_started(mutual(tls, tls_rabbitmq, secret, **overrides(tls))))
    assert_clear(error, TransportError, says, secret, caplog)
    if says == "certificate verify failed":  # the broker's certificate, checked by us
        assert_not_retryable(error)


@rabbitmq
async def test_rabbitmq_verification_refuses_a_certificate_for_another_host(
    tls: TlsFiles, tls_rabbitmq: TlsRabbitMQ, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = mutual(tls, tls_rabbitmq, secret).replace("@127.0.0.1:", "@localhost:")
    error = await refusal(transport_started(url))
    assert_clear(error, TransportError, "mismatch", secret, caplog)
    assert_not_retryable(error)


@rabbitmq
async def test_rabbitmq_plain_amqp_to_the_tls_port_is_refused(
    tls_rabbitmq: TlsRabbitMQ, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    error = await refusal(transport_started(tls_rabbitmq.url(secret, scheme="amqp")))
    assert_clear(error, TransportError, "connecting", secret, caplog)


# -- a worker process, end to end --------------------------------------------------


@postgres
@rabbitmq
async def test_a_command_round_trip_through_a_worker_process_over_tls(
    tmp_path: Path, tls: TlsFiles, tls_postgres: TlsPostgres, tls_rabbitmq: TlsRabbitMQ, secret: str
) -> None:
    dsn = tls_postgres.url(secret, sslmode="verify-full", sslrootcert=str(tls.authority.cert))
    amqp_url = mutual(tls, tls_rabbitmq, secret)
    namespace = f"tls_{uuid.uuid4().hex[:12]}"
    async with process_fleet(
        tmp_path, namespace, dsn, amqp_url, app="examples.demo:APP", partitions=2, cwd=ROOT
    ) as fleet:
        worker = fleet.start_worker("w1", health_port="0")
        await fleet.balanced()
        async with fleet.client() as client:
            ref = counter.Counter.ref("tls")
            assert await client.call(ref, counter.Increment(amount=2)) == {"count": 2}
            assert await client.call(ref, counter.Increment(amount=3)) == {"count": 5}
        await fleet.stop()
        assert worker.process.returncode == 0
        assert secret not in worker.log.read_text(errors="replace")


@postgres
@rabbitmq
@pytest.mark.parametrize("wrong", ["database", "broker"])
async def test_a_worker_with_an_unknown_authority_exits_saying_why(
    tls: TlsFiles, tls_postgres: TlsPostgres, tls_rabbitmq: TlsRabbitMQ, secret: str, wrong: str
) -> None:
    authority = dict.fromkeys(("database", "broker"), tls.authority.cert)
    authority[wrong] = tls.other_authority.cert
    environment = {
        "PACHYDERM_DATABASE_URL": tls_postgres.url(
            secret, sslmode="verify-full", sslrootcert=str(authority["database"])
        ),
        "PACHYDERM_AMQP_URL": mutual(tls, tls_rabbitmq, secret, cafile=str(authority["broker"])),
        "PACHYDERM_NAMESPACE": f"tls_{uuid.uuid4().hex[:12]}",
        "PACHYDERM_HEALTH_PORT": "0",
        "PACHYDERM_SECRETS_DIR": str(ROOT / "no-such-folder"),
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "pachyderm", "worker", "examples.demo:APP"],
        cwd=ROOT,
        env={**_inherited(), **environment},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    last = done.stderr.strip().splitlines()[-1]
    service = {"database": "PostgreSQL", "broker": "RabbitMQ"}[wrong]
    assert last.startswith("pachyderm: "), last
    assert service in last, last
    assert "CERTIFICATE_VERIFY_FAILED" in last, last
    assert secret not in output


def _inherited() -> dict[str, str]:
    """This process's environment less any Pachyderm setting it may carry."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PACHYDERM_")}
