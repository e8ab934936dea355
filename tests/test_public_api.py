"""The public API is a promise: changing it must be a deliberate edit of this test."""

import pachyderm
import pachyderm.store
import pachyderm.testing

PACHYDERM = {
    "App",
    "DecodeError",
    "DefinitionError",
    "DuplicateNameError",
    "Effect",
    "EffectHandler",
    "Entity",
    "EntityTypeMismatchError",
    "FieldProblem",
    "HandleResult",
    "HandlerError",
    "InvalidEntityIdError",
    "InvalidInputError",
    "InvalidMessageError",
    "MigrationError",
    "PachydermError",
    "Ref",
    "Reject",
    "RejectedError",
    "Reply",
    "Send",
    "StoreError",
    "StoreUnavailableError",
    "UnknownNameError",
    "UnsupportedContentTypeError",
    "current_ref",
    "entity_id",
}
STORE = {
    "Change",
    "CommitOutcome",
    "Committed",
    "Conflict",
    "Duplicate",
    "EventStore",
    "LoadedEntity",
    "NewEffect",
    "NewEvent",
    "OutboxEntry",
    "PostgresEventStore",
    "RecordedEvent",
    "Snapshot",
    "SqliteEventStore",
    "open_store",
}
TESTING = {"Outcome", "Scenario", "assert_replay_matches", "given"}


def test_the_public_names_are_exactly_these() -> None:
    assert set(pachyderm.__all__) == PACHYDERM
    assert set(pachyderm.store.__all__) == STORE
    assert set(pachyderm.testing.__all__) == TESTING


def test_every_public_name_exists_and_is_documented() -> None:
    for module in (pachyderm, pachyderm.store, pachyderm.testing):
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type) or callable(value):
                assert value.__doc__, f"{module.__name__}.{name} has no docstring"


def test_every_error_is_a_pachyderm_error() -> None:
    errors = [getattr(pachyderm, name) for name in pachyderm.__all__ if name.endswith("Error")]
    assert len(errors) >= 10
    for error in errors:
        assert issubclass(error, pachyderm.PachydermError), error
