"""The export file: stored histories as JSON lines or a msgpack stream (docs/protocol.md,
"Exported histories").

A file is a sequence of records, each a map with a ``record`` key: one ``export``
header (``format_version``), then per entity one ``entity`` record followed by
exactly its ``events`` count of ``event`` records, then one ``end`` record with
the totals. Invariants: a reader holds one entity at a time; a file without its
``end`` record, or whose totals disagree, is refused as truncated; event data and
snapshot states are the stored msgpack decoded to plain values, so reading them
back encodes them to the bytes they were stored as, without the app's classes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Literal

import msgpack

from . import _codec
from ._errors import DecodeError, InvalidInputError, InvalidMessageError
from ._histories import StoredHistory, store_histories
from ._reference import Ref
from .store import EventStore, RecordedEvent, Snapshot

FORMAT_VERSION = 1
Format = Literal["jsonl", "msgpack"]
FORMATS: tuple[Format, ...] = ("jsonl", "msgpack")
_CHUNK = 64 * 1024


class ExportFileError(InvalidInputError):
    """A file is not an export this version reads (format, version, truncated, damaged)."""


@dataclass(frozen=True, slots=True)
class ExportHeader:
    """What the ``export`` record says: the format version, when, and which types."""

    format_version: int
    exported_at: str
    types: tuple[str, ...]


class HistoryWriter:
    """Writes histories to a binary stream; :meth:`finish` writes the ``end`` record."""

    def __init__(self, out: IO[bytes], file_format: Format, types: Sequence[str]) -> None:
        if file_format not in FORMATS:
            raise ValueError(f"unknown export format {file_format!r}: use jsonl or msgpack")
        self._out = out
        self._format = file_format
        self.entities = 0
        self.events = 0
        self._write(
            {
                "record": "export",
                "format_version": FORMAT_VERSION,
                "exported_at": datetime.now(UTC).isoformat(),
                "types": list(types),
            }
        )

    def write(self, history: StoredHistory) -> None:
        """One entity: its ``entity`` record, then its events, oldest first."""
        snapshot = history.snapshot
        self._write(
            {
                "record": "entity",
                "type": history.ref.type,
                "id": str(history.ref.id),
                "events": len(history.events),
                "snapshot": None
                if snapshot is None
                else {
                    "version": snapshot.version,
                    "fingerprint": snapshot.fingerprint,
                    "state": _plain(snapshot.state, history.ref, "snapshot"),
                },
            },
            f"{history.ref} (its snapshot)",
        )
        for event in history.events:
            self._write(
                {
                    "record": "event",
                    "version": event.version,
                    "name": event.name,
                    "schema_version": event.schema_version,
                    "data": _plain(event.data, history.ref, f"event {event.version}"),
                    "command_id": event.command_id,
                    "recorded_at": event.recorded_at.isoformat(),
                },
                f"{history.ref} event {event.version}",
            )
        self.entities += 1
        self.events += len(history.events)

    def finish(self) -> None:
        self._write({"record": "end", "entities": self.entities, "events": self.events})
        self._out.flush()

    def _write(self, record: dict[str, Any], where: str = "the export") -> None:
        if self._format == "msgpack":
            self._out.write(_codec.encode(record))
            return
        try:
            line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ExportFileError(
                f"{where} cannot be written as JSON ({error}); use --format msgpack"
            ) from None
        self._out.write(line.encode() + b"\n")


def _plain(data: bytes, ref: Ref, what: str) -> Any:
    try:
        return _codec.decode_stored(data)
    except DecodeError as error:
        raise ExportFileError(f"{ref} {what}: the stored bytes are not msgpack: {error}") from None


# -- reading -------------------------------------------------------------------------


class HistoryReader:
    """The histories of an export file, one entity at a time (iterate it once).

    The format (JSON lines or msgpack) is told by the first byte: ``{`` is JSON.
    """

    def __init__(self, source: IO[bytes]) -> None:
        self._records = _records(source)
        header = self._next("the export header")
        if header.get("record") != "export":
            raise ExportFileError("not a pachyderm export: it does not start with its header")
        version = header.get("format_version")
        if version != FORMAT_VERSION:
            raise ExportFileError(
                f"export format version {version!r} is not read by this version of"
                f" pachyderm (it reads {FORMAT_VERSION})"
            )
        self.header = ExportHeader(
            version, str(header.get("exported_at")), tuple(header.get("types") or ())
        )

    def __iter__(self) -> Iterator[StoredHistory]:
        entities = events = 0
        while True:
            record = self._next("the end record (the export is truncated)")
            kind = record.get("record")
            if kind == "end":
                if (record.get("entities"), record.get("events")) != (entities, events):
                    raise ExportFileError(
                        f"the export ends after {entities} entities and {events} events,"
                        f" but says {record.get('entities')} and {record.get('events')}"
                    )
                return
            if kind != "entity":
                raise ExportFileError(f"expected an entity record, found {kind!r}")
            history = self._entity(record)
            entities += 1
            events += len(history.events)
            yield history

    def _entity(self, record: dict[str, Any]) -> StoredHistory:
        try:
            ref = Ref(str(record["type"]), uuid.UUID(str(record["id"])))
            count = int(record["events"])
            stored = record["snapshot"]
            snapshot = (
                None
                if stored is None
                else Snapshot(
                    int(stored["version"]), _codec.encode(stored["state"]), stored["fingerprint"]
                )
            )
        except (KeyError, TypeError, ValueError, InvalidMessageError) as error:
            raise ExportFileError(f"a damaged entity record: {error!r}") from None
        events = tuple(
            self._event(ref, self._next(f"event records of {ref}")) for _ in range(count)
        )
        return StoredHistory(ref, events, snapshot)

    def _event(self, ref: Ref, record: dict[str, Any]) -> RecordedEvent:
        if record.get("record") != "event":
            raise ExportFileError(
                f"{ref}: expected an event record, found {record.get('record')!r}"
            )
        try:
            return RecordedEvent(
                entity_id=ref.id,
                version=int(record["version"]),
                name=str(record["name"]),
                data=_codec.encode(record["data"]),
                command_id=record["command_id"],
                recorded_at=datetime.fromisoformat(record["recorded_at"]),
                schema_version=int(record["schema_version"]),
            )
        except (KeyError, TypeError, ValueError, DecodeError) as error:
            raise ExportFileError(f"{ref}: a damaged event record: {error!r}") from None

    def _next(self, what: str) -> dict[str, Any]:
        record = next(self._records, None)
        if record is None:
            raise ExportFileError(f"the export ends before {what}")
        return record


@contextlib.contextmanager
def open_export(path: str | os.PathLike[str]) -> Iterator[HistoryReader]:
    """The histories of the export file at ``path``, read as the block iterates them."""
    try:
        source = open(path, "rb")  # noqa: SIM115 (closed by the with below)
    except OSError as error:
        raise ExportFileError(f"cannot read {os.fspath(path)}: {error.strerror}") from None
    with source:
        yield HistoryReader(source)


def _records(source: IO[bytes]) -> Iterator[dict[str, Any]]:
    first = source.read(1)
    if not first:
        raise ExportFileError("the export is empty")
    values = _json_lines(first, source) if first == b"{" else _msgpack_values(first, source)
    for value in values:
        if not isinstance(value, dict):
            raise ExportFileError(f"a record is a map, not {type(value).__name__}")
        yield value


def _json_lines(first: bytes, source: IO[bytes]) -> Iterator[Any]:
    lines = itertools.chain([first + source.readline()], source)
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                yield json.loads(line, parse_constant=_no_constant)
            except ValueError as error:
                raise ExportFileError(f"line {number} is not JSON: {error}") from None


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _msgpack_values(first: bytes, source: IO[bytes]) -> Iterator[Any]:
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, timestamp=0)
    chunk = first
    try:
        while chunk:
            unpacker.feed(chunk)
            yield from unpacker
            chunk = source.read(_CHUNK)
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        raise ExportFileError(f"not a msgpack export: {error}") from None


async def export_histories(
    store: EventStore, types: Sequence[str], out: IO[bytes], file_format: Format = "jsonl"
) -> HistoryWriter:
    """Write every stored history of ``types`` to ``out``, an entity at a time; the
    writer returned tells how many entities and events it wrote."""
    writer = HistoryWriter(out, file_format, types)
    async for history in store_histories(store, types):
        writer.write(history)
    writer.finish()
    return writer
