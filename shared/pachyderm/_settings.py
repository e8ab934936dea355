"""Settings from environment variables (prefix ``PACHYDERM_``) and ``.env`` files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._garbage_collection import DEFAULT_THRESHOLD
from .store._shard_map import ShardMap

SECRETS_DIR_VARIABLE = "PACHYDERM_SECRETS_DIR"
DEFAULT_SECRETS_DIR = "/run/secrets/pachyderm"
# The logging levels a process may log from, as uvicorn names them.
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class Settings(BaseSettings):
    """Everything a Pachyderm process reads from its environment.

    URLs may carry passwords, so they are secrets: they never appear in
    ``repr`` or logs.
    """

    model_config = SettingsConfigDict(env_prefix="PACHYDERM_", env_file=".env", extra="ignore")

    database_url: SecretStr = Field(
        SecretStr("sqlite:///pachyderm.db"),
        description="postgresql://user:password@host/db, or sqlite:///path for embedded mode",
    )
    amqp_url: SecretStr = Field(
        SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        description="the RabbitMQ broker, or the nodes of a RabbitMQ cluster separated by"
        " commas (a process connects to one at random and moves to the next when it is lost)",
    )
    namespace: str = Field(
        "pachyderm",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="isolates fleets sharing a broker and a database (exchange and queue"
        " prefix, PostgreSQL schema)",
    )
    partitions: int = Field(16, ge=1, le=1024, description="partition queues; fixed per fleet")
    database_shards: SecretStr = Field(
        SecretStr(""),
        description="PostgreSQL servers by partition, FIRST-LAST=URL entries (or a JSON"
        " object of them) covering every partition once; the database URL then keeps the"
        " fleet's own tables (membership, projection cursors, quarantine). Empty: one server",
    )
    app: str | None = Field(
        None,
        description="the app to serve, as module or module:attribute, when the command line"
        " names none (empty: none)",
    )
    ownership: Literal["fleet", "all"] = Field(
        "fleet",
        description="fleet: partitions spread over the live workers; all: this worker"
        " consumes every partition (a single worker, or tests of overlapping fleets)",
    )
    worker_id: str | None = Field(None, description="defaults to host name and process id")
    snapshot_every: int = Field(100, ge=0, description="snapshot every N events; 0 turns it off")
    prefetch: int = Field(512, ge=1, description="unacknowledged deliveries per partition")
    max_batch: int = Field(256, ge=1, description="deliveries applied in one commit")
    cache_capacity: int = Field(100_000, ge=1, description="entities kept in memory per worker")
    idle_timeout: float = Field(600.0, gt=0, description="seconds before an idle entity unloads")
    heartbeat_interval: float = Field(0.4, gt=0, description="seconds between worker heartbeats")
    statement_timeout: float = Field(
        15.0,
        gt=0,
        description="seconds a worker's statement (or new connection) waits for PostgreSQL"
        " before it counts the database unavailable: a network cut that drops packets holds"
        " a batch, and its deliveries, no longer",
    )
    dead_after: float = Field(
        1.2,
        gt=0,
        description="seconds without a heartbeat before a worker counts as dead; the same"
        " for every worker of a namespace",
    )
    fleet_size: int | None = Field(
        None,
        ge=1,
        description="how many workers the deployment runs (a StatefulSet's replicas), the"
        " same for every worker of a namespace: a fleet starting cold takes its partitions"
        " as soon as that many joined, and a worker replaced in a running fleet its share"
        " at once, rather than each after a join delay (one to two PACHYDERM_DEAD_AFTER);"
        " unset: the join delay always",
    )
    pause_tolerance: float = Field(
        3.0,
        ge=0,
        description="seconds a worker's event loop may stay blocked (a hanging handler"
        " before the handler budget interrupts it, a long collector pass) while a thread"
        " of its own renews its lease, so its partitions stay put rather than move away"
        " and back; at most the handler budget; a killed worker still counts as dead"
        " after PACHYDERM_DEAD_AFTER; 0: no renewal while blocked",
    )
    stop_limit: float = Field(
        180.0,
        ge=0,
        description="seconds a partition leaving a worker may take to stop (its batch in"
        " flight finishing) before the worker counts itself wedged, logs its tasks' stacks,"
        " gives its lease up and exits with status 75 so that its partitions move; 0: no"
        " limit",
    )
    broker_patience: float = Field(
        1.0,
        gt=0,
        description="seconds a worker may stay without reaching the broker (its connection"
        " lost, reconnecting in vain) before it gives up its partitions to the others until"
        " it reaches the broker again; longer rides out a cluster node's failover or a broker"
        " blocking publishers, at the cost of partitions unserved meanwhile; a connection"
        " made again sooner counts too (the worker then opens its partitions anew)",
    )
    effects_grace: float = Field(
        5.0,
        gt=0,
        description="seconds an effect may wait in the outbox before any worker's sweep"
        " publishes it (normally its own worker publishes it right after the commit)",
    )
    call_timeout: float = Field(10.0, gt=0, description="seconds a call waits for its reply")
    client_max_in_flight: int = Field(
        1000,
        ge=0,
        description="calls a client (the gateway's too) has in flight at once; beyond it a"
        " caller waits PACHYDERM_CLIENT_WAIT seconds for a place, then is refused as"
        " overloaded (the gateway: 429); 0: no limit",
    )
    client_wait: float = Field(
        1.0, ge=0, description="seconds a call waits for a place among the client's in flight"
    )
    gateway_fleet_check: float = Field(
        2.0,
        ge=0,
        description="seconds between the gateway's looks at whether any worker consumes the"
        " partition queues; while none does, calls are answered 503 with Retry-After at once"
        " instead of timing out; 0: never look",
    )
    max_in_flight: int = Field(
        4096,
        ge=0,
        description="commands a worker handles at once, across its partitions (each takes"
        " its batches within it, fairly); the rest wait in the broker, at most"
        " PACHYDERM_PREFETCH unacknowledged per partition; 0: no limit",
    )
    queue_max_length: int = Field(
        0,
        ge=0,
        description="ready commands a partition queue holds at most (0: no limit); the same"
        " for every process of a namespace (RabbitMQ cannot change it on an existing queue)",
    )
    queue_overflow: Literal["reject-publish", "drop-head"] = Field(
        "reject-publish",
        description="what a partition queue at PACHYDERM_QUEUE_MAX_LENGTH does: reject-publish"
        " refuses new commands (callers get OverloadedError, the gateway 429), drop-head"
        " dead-letters the oldest",
    )
    effect_attempts: int = Field(
        5,
        ge=1,
        description="tries of a failing effect handler for one delivery before its effect is"
        " dead-lettered (`pachyderm effects-dead-letters` lists and replays them); 1: no retry",
    )
    effect_retry_first: float = Field(
        0.5,
        gt=0,
        description="seconds an effect dispatcher waits before trying a failed handler again;"
        " each later wait doubles, plus a random jitter of up to this much",
    )
    effect_retry_longest: float = Field(
        30.0, gt=0, description="the longest wait between two tries of an effect handler"
    )
    event_relay: bool = Field(
        False,
        description="`pachyderm projections` also runs the event relay (every committed"
        " event published to the exchange <namespace>.events) when the app registers none",
    )
    gateway_host: str = Field("127.0.0.1", description="address the HTTP gateway listens on")
    gateway_port: int = Field(8080, ge=0, le=65535, description="port of the HTTP gateway")
    gateway_auth: bool = Field(
        True, description="require bearer tokens at the gateway; false only for local development"
    )
    gateway_tokens: SecretStr = Field(
        SecretStr(""),
        description="gateway bearer tokens and their rights, e.g."
        " 's3cret=call+read,dashboard=read' (rights: call, read)",
    )
    gateway_max_body: int = Field(
        1024 * 1024, ge=1, description="largest request body the gateway accepts, in bytes"
    )
    gateway_url: str | None = Field(
        None, description="where `pachyderm call` reaches a gateway instead of the broker"
    )
    gateway_token: SecretStr = Field(
        SecretStr(""), description="the bearer token `pachyderm call` sends to that gateway"
    )
    admin_token: SecretStr = Field(
        SecretStr(""),
        description="the bearer token of the gateway's admin routes (erasing entities, the"
        " quarantine, releasing held timers); unset: every admin route answers 403",
    )
    ended_history: Literal["keep", "prune"] = Field(
        "keep",
        description="what becomes of the events of an ended entity before its final snapshot:"
        " keep them, or let `pachyderm prune-ended` delete them (projections that had not"
        " read them, and rebuilds, then never see them)",
    )
    health_host: str = Field(
        "127.0.0.1",
        description="address the health and metrics endpoints of a worker or effects"
        " dispatcher listen on; like the gateway's, loopback unless told (the worker image"
        " sets 0.0.0.0)",
    )
    health_port: int = Field(
        8081,
        ge=0,
        le=65535,
        description="port of the health and metrics endpoints of a worker or effects"
        " dispatcher, one per process of a host: a port already taken stops the process"
        " with an error; 0: any free port",
    )
    health_port_file: Path | None = Field(
        None,
        description="file the health port is written to once it listens (with"
        " PACHYDERM_HEALTH_PORT=0: how to find the port picked)",
    )
    otlp_endpoint: str | None = Field(
        None,
        description="OpenTelemetry collector (OTLP over HTTP);"
        " unset: OTEL_EXPORTER_OTLP_ENDPOINT, else no export",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="json: one structured record per line, with trace ids"
    )
    log_level: LogLevel = Field(
        "info", description="the least severe records logged: debug, info, warning, error, critical"
    )
    command_retention: float = Field(
        7 * 24 * 3600.0,
        gt=0,
        description="seconds a command id (and its stored reply) is kept: a command applies"
        " once if its copies come within this window; the same for every process of a"
        " namespace (default 604800: 7 days)",
    )
    command_expiry_margin: float = Field(
        3600.0,
        ge=0,
        description="a command sent more than PACHYDERM_COMMAND_RETENTION less this many"
        " seconds ago is refused (expired), and one sent more than this far in the future is"
        " invalid: room for clocks that disagree (default 3600)",
    )
    outbox_retention: float = Field(
        24 * 3600.0,
        gt=0,
        description="seconds a published effect stays in the outbox (default 86400: 1 day)",
    )
    prune_interval: float = Field(
        300.0,
        ge=0,
        description="seconds between pruning runs of the worker that owns partition 0"
        " (old command ids and published effects); 0: workers never prune"
        " (`pachyderm prune` still does)",
    )
    prune_batch: int = Field(
        1000, ge=1, le=100_000, description="rows deleted per pruning transaction"
    )
    prune_pause: float = Field(
        0.1, ge=0, description="seconds a pruning run pauses between two batches"
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="deliveries of a command without an answer (its handler crashed, hung"
        " or killed the worker) before it is quarantined (`pachyderm quarantine`); tries"
        " of a timer's fire before it is held (`pachyderm timers release`)",
    )
    quarantine_policy: Literal["park", "skip"] = Field(
        "park",
        description="what a quarantined command does to its entity: park (its later"
        " commands wait, in order, until an operator resumes or skips it) or skip (they run)",
    )
    handler_budget: float = Field(
        30.0,
        ge=0,
        description="seconds a worker's event loop may stay blocked (a handler that hangs)"
        " before the handler is interrupted (its batch counts as an attempt) or, if it"
        " cannot be, the worker gives its lease up and exits with status 75 so that its"
        " partitions move, and a redelivered command's decision may take in a forked"
        " child before the child is killed and the attempt counted; 0: no limit for the"
        " loop, 30 s for a child",
    )

    gc_threshold: int = Field(
        DEFAULT_THRESHOLD,
        ge=0,
        description="net allocations of tracked objects between a worker's garbage"
        " collector passes (Python's first threshold; its default, 700, has the"
        " collector scan the whole entity cache about once a second under load);"
        " 0: Python's default",
    )

    @field_validator("database_shards")
    @classmethod
    def _shards_cover_the_partitions(cls, shards: SecretStr, info: ValidationInfo) -> SecretStr:
        partitions = info.data.get("partitions")
        if shards.get_secret_value().strip() and partitions is not None:
            ShardMap.parse(shards.get_secret_value(), partitions)  # raises what is wrong
        return shards

    def shard_map(self) -> ShardMap | None:
        """The servers by partition (:attr:`database_shards`), None for one server."""
        text = self.database_shards.get_secret_value()
        return ShardMap.parse(text, self.partitions) if text.strip() else None

    @field_validator("command_expiry_margin")
    @classmethod
    def _margin_inside_retention(cls, margin: float, info: ValidationInfo) -> float:
        retention = info.data.get("command_retention")
        if retention is not None and margin >= retention:
            raise ValueError(
                f"must be shorter than PACHYDERM_COMMAND_RETENTION ({retention:g} seconds)"
            )
        return margin


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, a ``.env`` file and secret files.

    Secret files (one per setting, named like its variable: ``PACHYDERM_DATABASE_URL``) are read
    from ``$PACHYDERM_SECRETS_DIR``, else from ``/run/secrets/pachyderm`` when
    it exists: the way Kubernetes and Docker mount secrets.
    """
    folder = os.environ.get(SECRETS_DIR_VARIABLE) or DEFAULT_SECRETS_DIR
    if Path(folder).is_dir():
        return Settings(_secrets_dir=folder, **overrides)
    return Settings(**overrides)
