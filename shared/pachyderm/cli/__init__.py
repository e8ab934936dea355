"""The ``pachyderm`` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from .._errors import PachydermError
from .._settings import Settings
from ._inspect import inspect_entity
from ._migrate import migrate


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pachyderm", description="Durable, event-sourced entities."
    )
    parser.add_argument("--database-url", help="overrides PACHYDERM_DATABASE_URL")
    parser.add_argument("--namespace", help="overrides PACHYDERM_NAMESPACE")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="create or upgrade the schema (safe to run concurrently)")
    inspect = commands.add_parser("inspect", help="show an entity's history and state")
    inspect.add_argument("type", help="entity type name, e.g. account")
    inspect.add_argument("id", help="entity id (UUID), or its natural key with --key")
    inspect.add_argument("--key", action="store_true", help="ID is a natural key (uuid5)")
    inspect.add_argument("--app", help="module[:attribute] of the App; overrides PACHYDERM_APP")
    inspect.add_argument("--from-version", type=int, default=1, metavar="N")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _settings(arguments: argparse.Namespace) -> Settings:
    overrides = {
        name: value
        for name in ("database_url", "namespace", "app")
        if (value := getattr(arguments, name, None)) is not None
    }
    return Settings(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pachyderm`` console command."""
    arguments = _parser().parse_args(argv)
    try:
        settings = _settings(arguments)
        if arguments.command == "migrate":
            asyncio.run(migrate(settings))
        else:
            asyncio.run(inspect_entity(settings, arguments))
    except PachydermError as error:
        print(f"pachyderm: {error}", file=sys.stderr)
        return 1
    return 0
