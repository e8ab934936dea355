"""Private PostgreSQL and RabbitMQ instances that a chaos run may crash and restart.

The machine's shared services are never restarted: a run that restarts a
service starts its own on loopback, in a temporary folder, on free ports,
and removes it afterwards. Either raises :class:`ServiceUnavailableError` when
this machine cannot run one (binaries missing, no unprivileged user for
PostgreSQL): the chaos suite then skips locally and fails in CI.

- PostgreSQL: ``initdb`` + ``pg_ctl`` from ``$PACHYDERM_CHAOS_PG_BIN``, else
  the newest ``/usr/lib/postgresql/*/bin``, else ``pg_config --bindir``.
  initdb refuses to run as root: as root it runs as the ``postgres`` user.
- RabbitMQ: ``rabbitmq-server`` and ``rabbitmqctl`` from
  ``$PACHYDERM_CHAOS_RABBITMQ_BIN``, else ``/usr/lib/rabbitmq/bin`` (the real
  scripts, not Debian's wrappers, which switch to the system node's user and
  folder), else ``$PATH``. Its own node name, ports, cookie (``HOME``),
  database and logs; the consistent-hash plugin enabled.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

# rabbitmqctl and friends open their own Erlang distribution port in this
# range (rabbitmq-env's default), so a private node must never listen there.
_CLI_DIST_PORTS = range(35672, 35683)
# Ports the machine's own RabbitMQ uses (AMQP, distribution), never ours.
_SHARED_RABBITMQ_PORTS = {5672, 25672}


class ServiceUnavailableError(RuntimeError):
    """A private instance cannot be started on this machine."""


def free_port() -> int:
    """A TCP port free on loopback right now, clear of ports RabbitMQ's tools use."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _CLI_DIST_PORTS and port not in _SHARED_RABBITMQ_PORTS:
            return port


def _run(command: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> str:
    """Run a command to completion; ServiceUnavailableError with its output if it fails."""
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ServiceUnavailableError(f"{command[0]}: {error}") from error
    if done.returncode != 0:
        raise ServiceUnavailableError(f"{' '.join(command)} failed: {done.stdout}{done.stderr}")
    return done.stdout


def _find_bin(variable: str, candidates: list[Path], program: str) -> Path:
    configured = os.environ.get(variable)
    if configured:
        if not (Path(configured) / program).exists():
            raise ServiceUnavailableError(f"${variable}: no {program} in {configured}")
        return Path(configured)
    for folder in candidates:
        if (folder / program).exists():
            return folder
    found = shutil.which(program)
    if found is None:
        raise ServiceUnavailableError(f"{program} not found: set {variable}")
    return Path(found).resolve().parent


# -- PostgreSQL ------------------------------------------------------------------


def _postgres_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name)
    candidates = list(reversed(versions))
    with contextlib.suppress(ServiceUnavailableError):
        candidates.append(Path(_run(["pg_config", "--bindir"]).strip()))
    return _find_bin("PACHYDERM_CHAOS_PG_BIN", candidates, "initdb")


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a loopback port (``dsn``): ``port``, else a free one."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = port or free_port()
        self.bin = _postgres_bin()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        # initdb and the server refuse root: run them as the postgres user.
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise ServiceUnavailableError(
                    "running as root and there is no postgres user"
                ) from None
            os.chown(folder, owner.pw_uid, owner.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _ctl(self, *arguments: str, timeout: float = 60) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        command = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-w"]
        log = ["-l", str(self.folder / "server.log")]
        _run([*self._as_user, *command, *log, *arguments], None, timeout)

    def start(self) -> None:
        if not self.data.exists():
            initdb = [str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U"]
            _run([*self._as_user, *initdb, "postgres", "--no-sync"])
        self._ctl("start")

    def crash(self) -> None:
        """Stop at once, as a power cut would: no checkpoint, recovery on the next start."""
        self._ctl("stop", "-m", "immediate")

    def stop(self) -> None:
        with contextlib.suppress(ServiceUnavailableError):
            self._ctl("stop", "-m", "fast")


# -- RabbitMQ ----------------------------------------------------------------------


def _rabbitmq_bin() -> Path:
    return _find_bin(
        "PACHYDERM_CHAOS_RABBITMQ_BIN", [Path("/usr/lib/rabbitmq/bin")], "rabbitmq-server"
    )


class PrivateRabbitMQ:
    """A throwaway single RabbitMQ node on loopback ports (``url``): free ones, or those
    given, with a node name, an Erlang ``cookie`` (the nodes of a cluster share one) and
    ``config`` lines for rabbitmq.conf when given."""

    def __init__(
        self,
        folder: Path,
        *,
        node: str | None = None,
        port: int | None = None,
        dist_port: int | None = None,
        cookie: str | None = None,
        config: str = "",
    ) -> None:
        self.folder = folder
        self.bin = _rabbitmq_bin()
        self.node = node or f"chaos-{uuid.uuid4().hex[:8]}@localhost"
        self.port = port or free_port()
        self.dist_port = dist_port or free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.pid_file = folder / "rabbitmq.pid"
        self._process: subprocess.Popen[bytes] | None = None
        listener = f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
        (folder / "rabbitmq.conf").write_text(listener + config)
        (folder / "enabled_plugins").write_text("[rabbitmq_consistent_hash_exchange].\n")
        if cookie is not None:  # HOME is the folder: the node and its CLI read it there
            (folder / ".erlang.cookie").write_text(cookie)
            (folder / ".erlang.cookie").chmod(0o400)

    def _environment(self, *, server: bool) -> dict[str, str]:
        base = {
            **os.environ,
            "HOME": str(self.folder),  # the Erlang cookie: ours, not the system node's
            "RABBITMQ_NODENAME": self.node,
        }
        if not server:
            # The CLI tools must not get the node's ports: they would take them.
            return base
        return {
            **base,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.folder / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.folder / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(self.folder / "plugins"),
        }

    def ctl(self, *arguments: str, timeout: float = 90) -> str:
        command = [str(self.bin / "rabbitmqctl"), "-n", self.node, *arguments]
        return _run(command, self._environment(server=False), timeout)

    def start(self) -> None:
        # A pid file left by the last run (stopped or killed) would have `wait` watch a
        # process that is gone: the new node writes its own.
        self.pid_file.unlink(missing_ok=True)
        with (self.folder / "server.log").open("ab") as log:
            try:
                self._process = subprocess.Popen(
                    [str(self.bin / "rabbitmq-server")],
                    env=self._environment(server=True),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.folder,
                )
            except OSError as error:
                raise ServiceUnavailableError(f"rabbitmq-server: {error}") from error
        try:
            self.ctl("wait", str(self.pid_file), "--timeout", "90", timeout=100)
        except ServiceUnavailableError as error:
            self.kill()
            log_tail = (self.folder / "server.log").read_text(errors="replace")[-3000:]
            raise ServiceUnavailableError(f"{error}\n{log_tail}") from None

    def stop(self) -> None:
        """Stop the node cleanly (a restart is a stop, then a start)."""
        try:
            self.ctl("stop", str(self.pid_file), timeout=60)
        except ServiceUnavailableError:
            self.kill()
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(30)

    def send_signal(self, number: signal.Signals) -> None:
        """Send ``number`` to the node's Erlang VM (by the pid file: only ours)."""
        try:
            os.kill(int(self.pid_file.read_text().strip()), number)
        except (OSError, ValueError) as error:
            raise ServiceUnavailableError(f"{self.node}: {error}") from error

    def kill(self) -> None:
        """Kill the node's own processes (only ours: by the pid file and our child)."""
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(self.pid_file.read_text().strip()), signal.SIGKILL)
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)


# -- both, for a run -------------------------------------------------------------------


class PrivateServices:
    """A private PostgreSQL and/or RabbitMQ in one temporary folder, removed by :meth:`close`."""

    def __init__(self, *, postgres: bool, rabbitmq: bool) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="pachyderm-chaos-"))
        self.folder.chmod(0o755)  # PostgreSQL may run as another user: let it in
        self.postgres: PrivatePostgres | None = None
        self.rabbitmq: PrivateRabbitMQ | None = None
        try:
            if postgres:
                (self.folder / "pg").mkdir()
                self.postgres = PrivatePostgres(self.folder / "pg")
                self.postgres.start()
            if rabbitmq:
                (self.folder / "mq").mkdir()
                self.rabbitmq = PrivateRabbitMQ(self.folder / "mq")
                self.rabbitmq.start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.rabbitmq is not None:
            self.rabbitmq.stop()
        if self.postgres is not None:
            self.postgres.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
