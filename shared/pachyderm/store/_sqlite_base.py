"""What the SQLite modules of the store share: times as sortable text, transactions.

Times are stored as fixed-width ISO 8601 text in UTC (microseconds), so that
the text sorts like the time it shows and compares in SQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime


def time_text(value: datetime) -> str:
    """``value`` as the schema stores times."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def now_text() -> str:
    return time_text(datetime.now(UTC))


def text_time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    # The schema keeps times in UTC: text without an offset is UTC too.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@contextmanager
def transaction(connection: sqlite3.Connection, begin: str) -> Iterator[None]:
    """Run the block in one transaction: committed if it returns, else rolled back."""
    connection.execute(begin)
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        # rollback() is a no-op if SQLite already rolled back on its own.
        connection.rollback()
        raise
