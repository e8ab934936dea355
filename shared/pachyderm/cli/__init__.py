"""The ``pachyderm`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from .._errors import PachydermError
from .._running import run
from .._settings import Settings, load_settings
from ._call import call
from ._dispatch import parse_config, run_effects
from ._gateway import run_dev, run_gateway
from ._inspect import inspect_entity
from ._migrate import migrate
from ._runtime import broker
from ._serve import serve

# serve: the worker of `pachyderm worker`, for harnesses that wrap its ports.
__all__ = ["main", "serve"]


def _add_entity_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("type", help="entity type name, e.g. account")
    parser.add_argument("id", help="entity id (UUID), or its natural key with --key")
    parser.add_argument("--key", action="store_true", help="ID is a natural key (uuid5)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pachyderm", description="Durable, event-sourced entities."
    )
    parser.add_argument("--database-url", help="overrides PACHYDERM_DATABASE_URL")
    parser.add_argument("--amqp-url", help="overrides PACHYDERM_AMQP_URL")
    parser.add_argument("--namespace", help="overrides PACHYDERM_NAMESPACE")
    commands = parser.add_subparsers(dest="command_name", required=True)
    commands.add_parser("migrate", help="create or upgrade the schema (safe to run concurrently)")
    commands.add_parser("topology", help="declare the namespace's exchanges and queues")
    worker = commands.add_parser("worker", help="serve partitions (RabbitMQ + PostgreSQL)")
    worker.add_argument("app", help="module[:attribute] of the App")
    effects = commands.add_parser("effects", help="dispatch effects to the app's handlers")
    effects.add_argument("app", help="module[:attribute] of the App with effect handlers")
    effects.add_argument("--config", help="JSON object passed to every dispatch")
    effects.add_argument("--group", default="handlers", help="consumer group (queue) name")
    call_parser = commands.add_parser("call", help="send a command and print the reply")
    _add_entity_arguments(call_parser)
    call_parser.add_argument("command", nargs="?", help="the command's registered name")
    call_parser.add_argument("--data", help="the command's fields as a JSON object")
    call_parser.add_argument("--query", action="store_true", help="a read-only query")
    call_parser.add_argument("--command-id", help="makes retries safe: applies once")
    call_parser.add_argument(
        "--gateway",
        metavar="URL",
        help="call through this HTTP gateway (e.g. a running `pachyderm dev`) instead of"
        " over AMQP; default $PACHYDERM_GATEWAY_URL; a token from $PACHYDERM_GATEWAY_TOKEN",
    )
    gateway = commands.add_parser(
        "gateway", help="serve the HTTP gateway of a fleet (RabbitMQ, history from PostgreSQL)"
    )
    gateway.add_argument(
        "--app",
        help="module[:attribute] of the App: unknown names and bad fields are answered"
        " at the gateway (PACHYDERM_APP is not read: the gateway needs no app code)",
    )
    dev = commands.add_parser(
        "dev", help="run an app embedded in this process, with its HTTP gateway on localhost"
    )
    dev.add_argument("app", help="module[:attribute] of the App")
    dev.add_argument(
        "--port", type=int, help="the gateway's port on 127.0.0.1 (default PACHYDERM_GATEWAY_PORT)"
    )
    inspect = commands.add_parser("inspect", help="show an entity's history and state")
    _add_entity_arguments(inspect)
    inspect.add_argument("--app", help="module[:attribute] of the App; overrides PACHYDERM_APP")
    inspect.add_argument("--from-version", type=int, default=1, metavar="N")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _settings(arguments: argparse.Namespace) -> Settings:
    overrides = {
        name: value
        for name in ("database_url", "amqp_url", "namespace", "app")
        if (value := getattr(arguments, name, None)) is not None
    }
    return load_settings(**overrides)


async def _topology(settings: Settings) -> None:
    async with broker(settings, "topology") as transport:
        topology = transport.topology
        print(f"declared {topology.commands_exchange} with {topology.partitions} partitions,")
        print(f"{topology.effects_exchange} and {topology.dead_letter_queue}")


def _command(arguments: argparse.Namespace, settings: Settings) -> Coroutine[Any, Any, Any]:
    commands: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {
        "migrate": lambda: migrate(settings),
        "topology": lambda: _topology(settings),
        "worker": lambda: serve(settings, arguments.app),
        "effects": lambda: run_effects(
            settings, arguments.app, parse_config(arguments.config), arguments.group
        ),
        "call": lambda: call(settings, arguments),
        "gateway": lambda: run_gateway(settings, arguments.app),
        "dev": lambda: run_dev(settings, arguments.app, arguments.port),
        "inspect": lambda: inspect_entity(settings, arguments),
    }
    return commands[arguments.command_name]()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pachyderm`` console command."""
    arguments = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        outcome = run(_command(arguments, _settings(arguments)))
    except (PachydermError, ValueError) as error:
        print(f"pachyderm: {error}", file=sys.stderr)
        return 1
    return outcome if isinstance(outcome, int) else 0
