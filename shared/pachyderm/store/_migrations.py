"""Versioned schema migrations shipped as numbered SQL files, one folder per backend."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from .._errors import MigrationError

_FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations_for(backend: str) -> list[Migration]:
    """The migrations of ``backend`` ("postgres" or "sqlite"), numbered 1, 2, 3... in order."""
    folder = resources.files(__package__).joinpath("migrations", backend)
    found = []
    for entry in folder.iterdir():
        match = _FILE_NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise MigrationError(f"{backend} migrations are not numbered 1..N without gaps")
    return found


def pending(migrations: list[Migration], applied: int) -> list[Migration]:
    """Those not yet applied to a schema at version ``applied``; refuses a newer schema."""
    if applied > len(migrations):
        raise MigrationError(
            f"the schema is at version {applied}, newer than this code knows "
            f"({len(migrations)}); upgrade Pachyderm before running it against this database"
        )
    return migrations[applied:]
