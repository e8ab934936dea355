"""Private PostgreSQL and RabbitMQ instances that speak TLS, for the TLS tests.

Built on the chaos suite's private instances (``chaos.services``): on
loopback, on free ports, in a temporary folder removed by ``close``; the
machine's shared services are never touched.

- PostgreSQL: TCP connections over TLS only (``hostssl`` and no ``host`` line
  in ``pg_hba.conf``), password authentication (SCRAM) for a role of its own.
- RabbitMQ: a TLS listener that requires a client certificate signed by the
  test's authority (mutual TLS), and a user of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from chaos.services import (
    PrivatePostgres,
    PrivateRabbitMQ,
    PrivateServices,
    ServiceUnavailableError,
    free_port,
)

from .certificates import KeyPair

USER = "pachyderm_tls"


def _owned_like(folder: Path, *files: Path) -> None:
    """Give ``files`` to the owner of ``folder`` (the server's user), readable by it alone."""
    owner = folder.stat()
    for file in files:
        os.chown(file, owner.st_uid, owner.st_gid)
        file.chmod(0o600)


def _copy(pair: KeyPair, folder: Path) -> KeyPair:
    copied = KeyPair(folder / "server.pem", folder / "server.key")
    shutil.copyfile(pair.cert, copied.cert)
    shutil.copyfile(pair.key, copied.key)
    _owned_like(folder, copied.cert, copied.key)
    return copied


class TlsPostgres:
    """A private PostgreSQL serving ``server`` (its certificate) and accepting TCP
    connections only over TLS, as ``USER`` with ``password``."""

    def __init__(self, server: KeyPair, password: str) -> None:
        self._services = PrivateServices(postgres=True, rabbitmq=False)
        try:
            postgres = self._services.postgres
            assert postgres is not None
            self.port = postgres.port
            self._configure(postgres, server, password)
        except BaseException:
            self._services.close()
            raise

    @staticmethod
    def _configure(postgres: PrivatePostgres, server: KeyPair, password: str) -> None:
        copied = _copy(server, postgres.folder)
        # Over the Unix socket (trust, as initdb set it up): a role of the tests' own.
        psql = [str(postgres.bin / "psql"), "-h", str(postgres.folder), "-p", str(postgres.port)]
        statements = [
            f"CREATE ROLE {USER} LOGIN PASSWORD '{password}'",
            f"CREATE DATABASE {USER} OWNER {USER}",
        ]
        for statement in statements:
            command = [*psql, "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1"]
            done = subprocess.run(
                [*command, "-c", statement], capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                raise ServiceUnavailableError(f"psql failed: {done.stderr}")
        with (postgres.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "ssl = on\n"
                f"ssl_cert_file = '{copied.cert}'\n"
                f"ssl_key_file = '{copied.key}'\n"
                "password_encryption = 'scram-sha-256'\n"
            )
        # The socket stays trusted (for the set-up); TCP is TLS or nothing.
        (postgres.data / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n"
        )
        postgres.stop()
        postgres.start()

    def url(self, password: str, *, host: str = "127.0.0.1", **query: str) -> str:
        """The URL of the tests' database on this server, with ``query`` (e.g. sslmode)."""
        options = "&".join(f"{key}={value}" for key, value in query.items())
        return f"postgresql://{USER}:{password}@{host}:{self.port}/{USER}?{options}"

    def close(self) -> None:
        self._services.close()


class TlsRabbitMQ:
    """A private RabbitMQ node listening for AMQP over TLS only (``port``), serving
    ``server`` and requiring a client certificate signed by ``authority``; user
    ``USER`` with ``password``."""

    def __init__(self, authority: KeyPair, server: KeyPair, password: str) -> None:
        self._services = PrivateServices(postgres=False, rabbitmq=False)
        try:
            folder = self._services.folder / "mq"
            folder.mkdir()
            rabbitmq = PrivateRabbitMQ(folder)
            self._services.rabbitmq = rabbitmq
            self.port = free_port()
            copied = _copy(server, folder)
            shutil.copyfile(authority.cert, folder / "ca.pem")
            # Replaces the plain listener the private node would have.
            (folder / "rabbitmq.conf").write_text(
                "listeners.tcp = none\n"
                f"listeners.ssl.default = 127.0.0.1:{self.port}\n"
                f"ssl_options.cacertfile = {folder / 'ca.pem'}\n"
                f"ssl_options.certfile = {copied.cert}\n"
                f"ssl_options.keyfile = {copied.key}\n"
                "ssl_options.verify = verify_peer\n"
                "ssl_options.fail_if_no_peer_cert = true\n"
                f"default_user = {USER}\n"
                f"default_pass = {password}\n"
            )
            rabbitmq.start()
        except BaseException:
            self._services.close()
            raise

    def url(
        self, password: str, *, scheme: str = "amqps", host: str = "127.0.0.1", **query: str
    ) -> str:
        """An AMQP URL of this node's TLS port with ``query`` (cafile, certfile...)."""
        options = "&".join(f"{key}={value}" for key, value in query.items())
        return f"{scheme}://{USER}:{password}@{host}:{self.port}/?{options}"

    def close(self) -> None:
        self._services.close()
