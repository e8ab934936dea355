"""The shard map: which PostgreSQL server holds which partitions.

Written as ``FIRST-LAST=URL`` entries (a single partition as ``P=URL``), separated by
whitespace, semicolons or commas, or as a JSON object of the same ranges to URLs::

    PACHYDERM_DATABASE_SHARDS="0-7=postgresql://a/app 8-15=postgresql://b/app"
    PACHYDERM_DATABASE_SHARDS='{"0-7": "postgresql://a/app", "8-15": "postgresql://b/app"}'

Invariants of a :class:`ShardMap`: its ranges cover partitions ``0 .. partitions - 1``
exactly once (no gap, no overlap, none past the end), sorted by their first partition;
one URL may hold several ranges. A commit's changes are routed by their partition,
so every row a partition writes lives on one server and a batch is split into one
transaction per server, never one spanning two.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .._errors import PachydermError

_ENTRY = re.compile(r"\s*(\d+)(?:\s*-\s*(\d+))?\s*=\s*(\S+?)\s*")
# Entries end at whitespace, a semicolon, or a comma that a new range follows (a
# multi-host URL, postgresql://a,b/db, keeps its own commas).
_SEPARATOR = re.compile(r"[\s;]+|,(?=\s*\d+(?:\s*-\s*\d+)?\s*=)")


class ShardMapError(PachydermError, ValueError):
    """The shard map is malformed, or does not cover every partition exactly once."""


@dataclass(frozen=True, slots=True)
class Shard:
    """Partitions ``first`` to ``last`` (both included) live on the server at ``url``."""

    first: int
    last: int
    url: str

    def __contains__(self, partition: object) -> bool:
        return isinstance(partition, int) and self.first <= partition <= self.last

    def describe(self) -> str:
        """The range as the map writes it, never the URL (it may hold a password)."""
        return f"{self.first}-{self.last}"


@dataclass(frozen=True, slots=True)
class ShardMap:
    """Partition ranges to database URLs, covering ``partitions`` (see the module)."""

    shards: tuple[Shard, ...]
    partitions: int

    def __post_init__(self) -> None:
        _check_cover(self.shards, self.partitions)

    @classmethod
    def parse(cls, text: str, partitions: int) -> ShardMap:
        """The map ``text`` writes, for a fleet of ``partitions`` partitions."""
        entries = _json_entries(text) if text.lstrip().startswith("{") else _text_entries(text)
        shards = tuple(sorted((_shard(key, url) for key, url in entries), key=_first))
        return cls(shards, partitions)

    @property
    def urls(self) -> list[str]:
        """The distinct URLs, in the order of the partitions they hold first."""
        return list(dict.fromkeys(shard.url for shard in self.shards))

    def url_of(self, partition: int) -> str:
        """The URL of the server holding ``partition``."""
        for shard in self.shards:
            if partition in shard:
                return shard.url
        raise ShardMapError(f"partition {partition} is not in 0..{self.partitions - 1}")


def _first(shard: Shard) -> int:
    return shard.first


def _text_entries(text: str) -> list[tuple[str, str]]:
    entries = []
    for part in _SEPARATOR.split(text.strip()):
        if not part:
            continue
        key, equals, url = part.partition("=")
        if not equals or not url:
            raise ShardMapError(f"shard map entry {key!r} is not FIRST-LAST=URL")
        entries.append((key, url))
    if not entries:
        raise ShardMapError("the shard map is empty: give FIRST-LAST=URL entries")
    return entries


def _json_entries(text: str) -> list[tuple[str, str]]:
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as error:
        raise ShardMapError(f"the shard map is not valid JSON: {error}") from error
    if not isinstance(loaded, dict) or not loaded:
        raise ShardMapError('a JSON shard map is an object such as {"0-7": "postgresql://..."}')
    entries = []
    for key, url in loaded.items():
        if not isinstance(url, str):
            raise ShardMapError(f"shard map range {key!r} needs a URL string")
        entries.append((key, url))
    return entries


def _shard(key: str, url: str) -> Shard:
    match = _ENTRY.fullmatch(f"{key}={url}")
    if match is None:
        raise ShardMapError(f"shard map range {key.strip()!r} is not FIRST-LAST or P")
    first = int(match[1])
    last = int(match[2]) if match[2] is not None else first
    if last < first:
        raise ShardMapError(f"shard map range {first}-{last} ends before it starts")
    if urlsplit(match[3]).scheme not in {"postgresql", "postgres"}:
        raise ShardMapError(f"shard map range {first}-{last} needs a postgresql:// URL")
    return Shard(first, last, match[3])


def _check_cover(shards: Iterable[Shard], partitions: int) -> None:
    following = 0
    for shard in shards:
        if shard.first > following:
            raise ShardMapError(
                f"the shard map leaves {_span(following, shard.first - 1)} on no server"
            )
        if shard.first < following:
            raise ShardMapError(
                f"shard map ranges overlap at partition {shard.first} ({shard.describe()})"
            )
        if shard.last >= partitions:
            raise ShardMapError(
                f"shard map range {shard.describe()} goes past the last partition"
                f" ({partitions - 1}; PACHYDERM_PARTITIONS={partitions})"
            )
        following = shard.last + 1
    if following == 0:
        raise ShardMapError("the shard map is empty: give FIRST-LAST=URL entries")
    if following < partitions:
        raise ShardMapError(f"the shard map leaves {_span(following, partitions - 1)} on no server")


def _span(first: int, last: int) -> str:
    return f"partition {first}" if first == last else f"partitions {first}-{last}"
