"""The public API is a promise: changing it must be a deliberate edit of this test."""

import inspect

import pachyderm
import pachyderm.fleet
import pachyderm.gateway
import pachyderm.store
import pachyderm.telemetry
import pachyderm.testing
import pachyderm.transport
import pachyderm.worker

PACHYDERM = {
    "AnyEvent",
    "Answer",
    "App",
    "CallTimeoutError",
    "Cancel",
    "Client",
    "CommandExpiredError",
    "CommandQuarantinedError",
    "DecodeError",
    "DefinitionError",
    "DuplicateNameError",
    "DuplicateWorkerError",
    "Effect",
    "EffectContext",
    "EffectHandler",
    "EmbeddedFleet",
    "End",
    "Entity",
    "EntityEndedError",
    "EntityErasedError",
    "EntityTypeMismatchError",
    "EventRelay",
    "FieldProblem",
    "FiredTimer",
    "FleetUnavailableError",
    "HandleResult",
    "HandlerError",
    "InvalidEntityIdError",
    "InvalidInputError",
    "InvalidMessageError",
    "InvalidSentTimeError",
    "MigrationError",
    "NewerSchemaError",
    "OverloadedError",
    "PachydermError",
    "PostgresProjection",
    "Projection",
    "ProjectionContext",
    "Ref",
    "Reject",
    "RejectedError",
    "Reply",
    "Schedule",
    "Send",
    "Settings",
    "StoreError",
    "StoreUnavailableError",
    "TransportError",
    "TransportUnavailableError",
    "UnknownNameError",
    "UnsupportedContentTypeError",
    "Upcaster",
    "current_effect",
    "current_ref",
    "current_timer",
    "embedded",
    "entity_id",
    "load_settings",
    "run",
    "upcaster",
}
STORE = {
    "ENDED",
    "ERASED",
    "ERASED_VERSION",
    "Change",
    "CommitOutcome",
    "Committed",
    "Conflict",
    "Duplicate",
    "Ended",
    "Erasure",
    "EventStore",
    "Fenced",
    "HasQuarantine",
    "ListedEntity",
    "LoadedEntity",
    "LocalWakeups",
    "LogWakeups",
    "LoggedEvent",
    "NewEffect",
    "NewEvent",
    "NoWakeups",
    "NotQuarantinedError",
    "OutboxEntry",
    "Parked",
    "PostgresEventStore",
    "QuarantineStore",
    "Quarantined",
    "RecordedEvent",
    "Retained",
    "Shard",
    "ShardMap",
    "ShardMapError",
    "ShardedEventStore",
    "Snapshot",
    "SqliteEventStore",
    "StoredTimer",
    "TimerFire",
    "TimerGone",
    "TimerWrite",
    "event_id",
    "open_store",
}
TESTING = {
    "DeadLetters",
    "EventStoreContract",
    "InspectableTransport",
    "LogScenario",
    "Outcome",
    "Pending",
    "ProcessFleet",
    "Projected",
    "ReplayProblem",
    "ReplayReport",
    "Scenario",
    "StoreFactory",
    "StoredEvent",
    "TransportContract",
    "WorkerProcess",
    "assert_replay_matches",
    "given",
    "given_log",
    "process_fleet",
    "replay_check",
}
TRANSPORT = {
    "DEFAULT_PARTITIONS",
    "Delivery",
    "InProcessTransport",
    "Inbox",
    "Message",
    "MessageHandler",
    "RabbitMQTransport",
    "RoutedAgain",
    "Topology",
    "Transport",
    "connect_to_broker",
}
FLEET = {
    "Membership",
    "OnChange",
    "PostgresMembership",
    "SoloMembership",
    "assign",
    "owned_by",
}
WORKER = {
    "BatchHooks",
    "Done",
    "EffectPublisher",
    "EntityCache",
    "Engine",
    "Hooks",
    "PartitionWorker",
    "PruneOptions",
    "Pruner",
    "QuarantineOptions",
    "TimerOptions",
    "Worker",
    "WorkerHooks",
    "WorkerOptions",
}
GATEWAY = {
    "GatewayOptions",
    "Right",
    "Tokens",
    "asyncapi_document",
    "create_app",
    "listen",
    "serve",
}
TELEMETRY = {
    "Check",
    "HealthServer",
    "PrometheusReader",
    "Telemetry",
    "TelemetryHooks",
    "broker_check",
    "configure_logging",
    "database_check",
    "health_routes",
    "install_telemetry",
    "metrics_response",
    "metrics_route",
    "setup_telemetry",
    "traced",
}
MODULES = {
    pachyderm: PACHYDERM,
    pachyderm.store: STORE,
    pachyderm.testing: TESTING,
    pachyderm.transport: TRANSPORT,
    pachyderm.fleet: FLEET,
    pachyderm.worker: WORKER,
    pachyderm.telemetry: TELEMETRY,
    pachyderm.gateway: GATEWAY,
}


def test_the_public_names_are_exactly_these() -> None:
    for module, names in MODULES.items():
        assert set(module.__all__) == names, module.__name__


def test_every_public_name_exists_and_is_documented() -> None:
    for module in MODULES:
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                assert value.__doc__, f"{module.__name__}.{name} has no docstring"


def test_every_error_is_a_pachyderm_error() -> None:
    errors = [getattr(pachyderm, name) for name in pachyderm.__all__ if name.endswith("Error")]
    assert len(errors) >= 10
    for error in errors:
        assert issubclass(error, pachyderm.PachydermError), error
