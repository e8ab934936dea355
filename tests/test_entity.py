"""The programming model: what handle may return and how failures surface."""

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import pytest

from pachyderm import (
    App,
    DefinitionError,
    DuplicateNameError,
    Effect,
    Entity,
    HandlerError,
    HandleResult,
    PachydermError,
    Ref,
    Reject,
    Reply,
    Send,
    UnknownNameError,
    current_ref,
)
from pachyderm._execution import effect_id, execute, read_stored_reply


@dataclass(frozen=True)
class Do:
    what: str


@dataclass(frozen=True)
class Done:
    what: str


class Box(Entity[list[str]]):
    commands = (Do,)
    events = (Done,)

    def init(self) -> list[str]:
        return []

    def handle(self, message: Any, state: list[str]) -> HandleResult:
        match message.what:
            case "nothing":
                return None
            case "events":
                return [Done("a"), Done("b")]
            case "effects":
                return [Done("a")], [Effect("mailer", {"to": "x"}), Send(self.ref("o"), Do("x"))]
            case "reply":
                return Reply({"size": len(state)}, events=[Done("r")])
            case "reject":
                return Reject("no_way", {"why": "because"})
            case "whoami":
                return Reply(str(current_ref()))
            case "raise":
                raise RuntimeError("boom")
            case "unregistered":
                return [Do("not an event")]
            case "bad effect":
                return [], ["not an effect"]
            case "bad send":
                return [], [Send(Ref.from_key("nobody", "x"), Do("x"))]
        return "a string"

    def update(self, event: Done, state: list[str]) -> list[str]:
        return [*state, event.what]


BOXES = App([Box])
BOX = BOXES.entity_type("box")
REF = Box.ref("b")


def run(what: str, state: list[str] | None = None) -> Any:
    state = state or []
    return execute(
        BOX, REF, state, len(state), Do(what), command_id="cmd-1", entity_types=BOXES.entity_type
    )


def test_type_names_default_to_the_snake_cased_class_name() -> None:
    class BankAccount(Entity[None]):
        def init(self) -> None: ...
        def handle(self, message: Any, state: None) -> HandleResult: ...
        def update(self, event: Any, state: None) -> None: ...

    assert BankAccount.type_name == "bank_account"
    assert BankAccount.ref("k") == Ref.from_key("bank_account", "k")


def test_no_events_records_only_the_command_and_replies_with_the_state() -> None:
    result = run("nothing", ["x"])
    assert (result.events, result.reply, result.version) == ((), ["x"], 1)
    change = result.change
    assert (change.expected_version, change.events, change.effects) == (1, [], [])
    assert read_stored_reply(change.reply) == (["x"], None)


def test_events_commit_and_the_reply_is_the_new_state() -> None:
    result = run("events", ["x"])
    assert result.state == ["x", "a", "b"]
    assert result.reply == ["x", "a", "b"]
    assert result.version == 3
    assert result.change.expected_version == 1
    assert [e.name for e in result.change.events] == ["Done", "Done"]


def test_effects_get_stable_ids_and_destinations() -> None:
    first, second = run("effects"), run("effects")
    assert first.change.effects == second.change.effects
    assert [e.destination for e in first.change.effects] == ["effect.mailer", "command.box"]
    assert first.change.effects[0].effect_id == effect_id(REF.id, "cmd-1", 0)


def test_an_explicit_reply_replaces_the_state() -> None:
    result = run("reply", ["x"])
    assert (result.reply, result.state) == ({"size": 1}, ["x", "r"])


def test_a_rejection_writes_no_events_and_records_the_reason() -> None:
    result = run("reject", ["x"])
    assert result.rejection == Reject("no_way", {"why": "because"})
    assert result.state == ["x"]
    assert (list(result.change.events), list(result.change.effects)) == ([], [])
    assert read_stored_reply(result.change.reply) == (None, result.rejection)


def test_handle_can_ask_which_entity_it_is() -> None:
    assert run("whoami").reply == str(REF)
    with pytest.raises(PachydermError, match="only available inside"):
        current_ref()


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("raise", "box.handle raised RuntimeError"),
        ("unregistered", "not a registered event"),
        ("bad effect", "use Effect, Send, Schedule or Cancel"),
        ("bad send", "unknown entity type 'nobody'"),
        ("unexpected", "handle returned str"),
    ],
)
def test_a_broken_handler_is_a_handler_error(what: str, message: str) -> None:
    with pytest.raises(HandlerError, match=message):
        run(what)


def test_an_app_refuses_two_types_with_one_name() -> None:
    class Other(Box):
        type_name = "box"

    with pytest.raises(DuplicateNameError, match="'box' is registered twice"):
        App([Box, Other])


def test_an_app_names_what_it_does_not_know() -> None:
    with pytest.raises(UnknownNameError, match="unknown entity type 'nope'; registered: box"):
        App([Box]).entity_type("nope")
    with pytest.raises(DefinitionError, match="not an Entity"):
        App([object()])  # type: ignore[list-item]


def test_an_entity_with_duplicate_message_names_fails_at_definition() -> None:
    with pytest.raises(DuplicateNameError):

        class Twice(Entity[None]):
            commands = MappingProxyType({"Do": Do, "Again": Do})
