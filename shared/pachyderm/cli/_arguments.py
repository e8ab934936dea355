"""The ``pachyderm`` command line: its parser, and the settings its options give.

Invariants: building the parser imports nothing beyond the standard library
(``pachyderm --help`` stays fast); the global options (``--database-url``,
``--amqp-url``, ``--namespace``, ``--log-level``) are accepted before the
subcommand and after it, the later one winning; a usage mistake exits 2, as
argparse does, with one line saying what is wrong.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import SecretStr, ValidationError

from .._errors import PachydermError
from .._settings import LOG_LEVELS, Settings, load_settings

DISTRIBUTION = "pachyderm-entities"
# Subcommands that serve an app: the positional APP, else PACHYDERM_APP.
SERVING = frozenset({"worker", "effects", "dev", "projections"})
# Subcommands that cannot run without an app: those, and those describing one.
NEEDS_APP = SERVING | {"asyncapi", "export", "replay-check"}
GLOBAL_OPTIONS = ("database_url", "amqp_url", "namespace", "log_level")


class _Version(argparse.Action):
    """``--version``: the installed distribution's version, looked up only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        try:
            installed = version(DISTRIBUTION)
        except PackageNotFoundError:
            installed = "(not installed)"
        print(f"pachyderm {installed}")  # on stdout, as argparse's own version action
        parser.exit()


def json_object(text: str) -> dict[str, Any]:
    """An argparse ``type``: a JSON object, else a usage error naming what is wrong."""
    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {type(value).__name__}")
    return value


def _global_options(default: Any) -> argparse.ArgumentParser:
    """The options every subcommand takes; ``default`` is what an absent one sets."""
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("global options (before or after the subcommand)")
    group.add_argument("--database-url", default=default, help="overrides PACHYDERM_DATABASE_URL")
    group.add_argument("--amqp-url", default=default, help="overrides PACHYDERM_AMQP_URL")
    group.add_argument("--namespace", default=default, help="overrides PACHYDERM_NAMESPACE")
    group.add_argument(
        "--log-level", default=default, choices=LOG_LEVELS, help="overrides PACHYDERM_LOG_LEVEL"
    )
    return options


def _add_entity_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("type", help="entity type name, e.g. account")
    parser.add_argument("id", help="entity id (UUID), or its natural key with --key")
    parser.add_argument("--key", action="store_true", help="ID is a natural key (uuid5)")


def _add_app_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "app", nargs="?", help=f"module[:attribute] of the App{what}; default $PACHYDERM_APP"
    )


def parser() -> argparse.ArgumentParser:
    """The ``pachyderm`` parser, subcommands and all."""
    main = argparse.ArgumentParser(
        prog="pachyderm",
        description="Durable, event-sourced entities.",
        parents=[_global_options(None)],
    )
    main.add_argument("--version", action=_Version, help="print the version and exit")
    # After the subcommand, an absent option sets nothing: the one given before stays.
    common = [_global_options(argparse.SUPPRESS)]
    commands = main.add_subparsers(dest="command_name", required=True, metavar="COMMAND")

    def add(name: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=description, description=description, parents=common)

    add("migrate", "create or upgrade the schema (safe to run concurrently)")
    _add_broker_commands(add)
    _add_storage_commands(add)
    _add_app_argument(add("worker", "serve partitions (RabbitMQ + PostgreSQL)"), "")
    effects = add("effects", "dispatch effects to the app's handlers")
    _add_app_argument(effects, " with effect handlers")
    effects.add_argument(
        "--config", type=json_object, default={}, help="JSON object passed to every dispatch"
    )
    effects.add_argument("--group", default="handlers", help="consumer group (queue) name")
    _add_operator_commands(add)
    call = add("call", "send a command and print the reply")
    _add_entity_arguments(call)
    call.add_argument("command", nargs="?", help="the command's registered name")
    call.add_argument("--data", help="the command's fields as a JSON object")
    call.add_argument("--query", action="store_true", help="a read-only query")
    call.add_argument("--command-id", help="makes retries safe: applies once")
    call.add_argument(
        "--gateway",
        metavar="URL",
        help="call through this HTTP gateway (e.g. a running `pachyderm dev`) instead of"
        " over AMQP; default $PACHYDERM_GATEWAY_URL; a token from $PACHYDERM_GATEWAY_TOKEN",
    )
    gateway = add("gateway", "serve the HTTP gateway of a fleet (RabbitMQ; history: PostgreSQL)")
    gateway.add_argument(
        "--app",
        help="module[:attribute] of the App, default $PACHYDERM_APP: unknown names and bad"
        " fields are then answered at the gateway; without one, the gateway needs no app"
        " code and the workers answer them",
    )
    dev = add("dev", "run an app embedded in this process, with its HTTP gateway on localhost")
    _add_app_argument(dev, "")
    dev.add_argument(
        "--port", type=int, help="the gateway's port on 127.0.0.1 (default PACHYDERM_GATEWAY_PORT)"
    )
    asyncapi = add("asyncapi", "print the app's AsyncAPI document (its messages' schemas)")
    _add_app_argument(asyncapi, "")
    asyncapi.add_argument("--json", action="store_true", help="JSON instead of YAML")
    _add_app_argument(
        add("projections", "run the app's projections on their share of the partitions"), ""
    )
    projection = add("projection", "show a projection's lag, pause, resume or rebuild it")
    projection.add_argument("action", choices=("status", "pause", "resume", "rebuild"))
    projection.add_argument("name", nargs="?", help="the projection (status: all when absent)")
    projection.add_argument("--app", help="module[:attribute] of the App; default $PACHYDERM_APP")
    projection.add_argument("--json", action="store_true", help="machine-readable status")
    inspect = add("inspect", "show an entity's history and state")
    _add_entity_arguments(inspect)
    inspect.add_argument("--app", help="module[:attribute] of the App; default $PACHYDERM_APP")
    inspect.add_argument("--from-version", type=int, default=1, metavar="N")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    listing = add("list", "list the entities of a type, a page at a time (from the store)")
    listing.add_argument("type", help="the entity type, e.g. account")
    listing.add_argument("--app", help="module[:attribute] of the App; default $PACHYDERM_APP")
    listing.add_argument("--by-change", action="store_true", help="by last change, not by id")
    listing.add_argument("--after", metavar="CURSOR", help="go on after the cursor a page ended")
    listing.add_argument("--limit", type=_page_size, default=100, metavar="N", help="1 to 1000")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    _add_evolution_commands(add)
    return main


def _add_broker_commands(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``topology`` (declare the namespace) and ``repartition --to N`` (grow the
    partition count of a running fleet)."""
    add("topology", "declare the namespace's exchanges and queues")
    repartition = add(
        "repartition",
        "grow the partition count of a running fleet, keeping each entity's commands in"
        " order: binds the new partition queues, then waits until the fleet (still on"
        " PACHYDERM_PARTITIONS, the old count) has applied every command published before;"
        " then restart the workers with the new count (docs/scaling.md)",
    )
    repartition.add_argument(
        "--to", type=int, required=True, metavar="N", help="the new count, above the present one"
    )
    repartition.add_argument(
        "--grace",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="wait after binding for publishes routed the old way to reach their queues",
    )
    repartition.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="give up if the old partitions are not all served up to the switch by then",
    )


def _add_storage_commands(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``prune`` (retention), ``erase`` (personal data) and ``prune-ended`` (histories of
    ended entities)."""
    prune = add(
        "prune",
        "delete command ids older than PACHYDERM_COMMAND_RETENTION and effects published"
        " longer ago than PACHYDERM_OUTBOX_RETENTION (as workers do), in batches",
    )
    prune.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    erase = add(
        "erase",
        "delete an entity's events, snapshot, command ids and replies, timers and log rows"
        " for good, leaving a tombstone that refuses every later command (audited)",
    )
    _add_entity_arguments(erase)
    erase.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    pruning = add(
        "prune-ended",
        "delete the events of ended entities before their final snapshot, in batches"
        " (only when PACHYDERM_ENDED_HISTORY=prune)",
    )
    pruning.add_argument("--dry-run", action="store_true", help="count what would go")
    pruning.add_argument("--batch", type=_page_size, default=1000, metavar="N", help="1 to 1000")


def _add_dead_letters_command(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``effects-dead-letters list|replay``: the effects whose handler failed every try."""
    dead = add(
        "effects-dead-letters",
        "list the effects whose handler failed every try (they stay in the dead-letter"
        " queue), or replay them to their handlers",
    )
    dead.add_argument("action", choices=("list", "replay"))
    which = dead.add_mutually_exclusive_group()
    which.add_argument(
        "--effect-id", action="append", metavar="ID", help="replay this effect (repeatable)"
    )
    which.add_argument("--all", action="store_true", help="replay every dead-lettered effect")
    dead.add_argument("--json", action="store_true", help="machine-readable output")


def _add_operator_commands(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """What operators do about what the workers set aside: dead-lettered effects,
    quarantined commands, held timers."""
    _add_dead_letters_command(add)
    _add_quarantine_command(add)
    _add_timers_command(add)


def _add_timers_command(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``timers release``: a timer held after its attempts fires again."""
    timers = add(
        "timers",
        "release a timer held after PACHYDERM_MAX_ATTEMPTS failed fires (its attempts start"
        " over and it fires at once; `pachyderm inspect` shows the attempts)",
    )
    timers.add_argument("action", choices=("release",))
    _add_entity_arguments(timers)
    timers.add_argument("timer", help="the timer's key, as the entity scheduled it")


def _add_quarantine_command(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``quarantine list|show|resume|skip``: poison commands set aside by the workers."""
    quarantine = add(
        "quarantine",
        "list the commands quarantined after PACHYDERM_MAX_ATTEMPTS attempts, show one,"
        " resume it (run it again, then its entity's parked commands) or skip it",
    )
    quarantine.add_argument("action", choices=("list", "show", "resume", "skip"))
    quarantine.add_argument("entity_id", nargs="?", help="show, resume, skip: the entity's id")
    quarantine.add_argument("command_id", nargs="?", help="show, resume, skip: the command id")
    quarantine.add_argument("--json", action="store_true", help="list: machine-readable output")


def _add_evolution_commands(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``export`` and ``replay-check``: stored histories to a file, and checked against
    the current code (from the store or from such a file)."""
    export = add("export", "write the stored histories of the app's entities to a file")
    _add_app_argument(export, "")
    _add_type_option(export)
    export.add_argument(
        "--format", choices=("jsonl", "msgpack"), help="default: jsonl (msgpack for *.msgpack)"
    )
    export.add_argument("--output", default="-", metavar="FILE", help="default: - (stdout)")
    check = add(
        "replay-check",
        "decode and fold stored histories with the current code, compare with snapshots",
    )
    _add_app_argument(check, "")
    _add_type_option(check)
    source = check.add_mutually_exclusive_group()
    source.add_argument("--all", action="store_true", help="every entity (the default)")
    source.add_argument("--sample", type=_sample_size, metavar="N", help="N random entities")
    source.add_argument(
        "--from", dest="from_file", metavar="FILE", help="an export file (- for stdin)"
    )
    check.add_argument("--seed", type=int, help="the --sample's random seed")
    check.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    check.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_type_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--type", action="append", metavar="TYPE", help="only this entity type (repeatable)"
    )


def _sample_size(text: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"a sample holds 1 entity or more, not {text!r}")
    return int(text)


def _page_size(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 1000):
        raise argparse.ArgumentTypeError(f"a page holds 1 to 1000 entities, not {text!r}")
    return int(text)


def subparser(main: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``, whose ``error`` names the subcommand."""
    for action in main._actions:  # argparse keeps its subparsers only there
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise LookupError(f"no subcommand {name!r}")


def settings_of(arguments: argparse.Namespace) -> Settings:
    """The settings, the options given overriding the environment's; a setting that is not
    valid is a :class:`PachydermError` naming its variable, in one line."""
    overrides = {
        name: value
        for name in (*GLOBAL_OPTIONS, "app")
        # An empty --app (or PACHYDERM_APP="", as a manifest clears it) means none.
        if (value := getattr(arguments, name, None)) is not None
    }
    try:
        settings = load_settings(**overrides)
    except ValidationError as error:
        raise PachydermError("; ".join(_problems(error))) from None
    return settings.model_copy(update={"app": settings.app or None})


def _problems(error: ValidationError) -> list[str]:
    """One ``PACHYDERM_NAME: what is wrong`` per invalid setting; secrets are not shown."""
    problems = []
    for problem in error.errors(include_url=False):
        name = "_".join(str(part) for part in problem["loc"]).upper()
        field = Settings.model_fields.get(name.lower())
        context = problem.get("ctx", {})
        if problem["type"] == "string_pattern_mismatch":
            what = f"must match {context['pattern'].strip('^$')}"
        else:
            what = problem["msg"][:1].lower() + problem["msg"][1:]
        secret = field is not None and field.annotation is SecretStr
        shown = "" if secret else f", got {problem['input']!r}"
        problems.append(f"PACHYDERM_{name}: {what}{shown}")
    return problems
