"""``pachyderm export APP``: the stored histories of the app's entity types, to a file.

The file's format is documented in docs/protocol.md ("Exported histories"); it is
what ``pachyderm replay-check --from FILE`` reads, in a user's CI for instance.
The store is read an entity at a time, so a large store exports in bounded memory.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .._history_file import ExportFileError, Format, export_histories
from .._loading import load_app
from .._settings import Settings
from ._store import settings_store


def entity_types(settings: Settings, chosen: list[str] | None) -> list[str]:
    """The types named (each checked against the app), else all of the app's."""
    assert settings.app is not None, "the command line checks it"
    app = load_app(settings.app)
    if chosen:
        return [app.entity_type(name).name for name in chosen]
    return [entity_type.name for entity_type in app]


def export_format(arguments: argparse.Namespace) -> Format:
    """``--format``, else told by the output's name (``.msgpack``), else JSON lines."""
    if arguments.format:
        chosen: Format = arguments.format
        return chosen
    return "msgpack" if str(arguments.output).endswith((".msgpack", ".mpk")) else "jsonl"


@contextlib.contextmanager
def _output(name: str) -> Iterator[IO[bytes]]:
    if name == "-":
        yield sys.stdout.buffer
        return
    # Written under another name, then renamed: a failed export leaves no partial file.
    path = Path(name)
    partial = path.with_name(path.name + ".partial")
    try:
        out = partial.open("wb")
    except OSError as error:
        raise ExportFileError(f"cannot write {name}: {error.strerror}") from None
    try:
        with out:
            yield out
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


async def export_command(settings: Settings, arguments: argparse.Namespace) -> None:
    types = entity_types(settings, arguments.type)
    async with settings_store(settings) as store:
        with _output(arguments.output) as out:
            written = await export_histories(store, types, out, export_format(arguments))
    where = "stdout" if arguments.output == "-" else arguments.output
    print(
        f"exported {written.entities} entities, {written.events} events to {where}",
        file=sys.stderr,
    )
