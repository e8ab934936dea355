"""Running projections (read models) over the event log.

:class:`ProjectionProcess` (``pachyderm projections APP``) runs an app's
projections on the partitions its membership assigns, one
:class:`ProjectionRunner` per projection and partition, each keeping its
cursor in a :class:`CursorStore`: :class:`PostgresCursors` (exactly-once and
at-least-once projections), :class:`SqliteCursors` (at least once only).
:class:`PostgresCursors` is imported on first use, and asyncpg with it.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_names
from ._cursors import Clear, Cursor, CursorStore, TransactionalCursors
from ._lag import Lag, LagGauges, lags
from ._open import open_cursors
from ._process import ProjectionProcess
from ._runner import ProjectionRunner, RunnerOptions
from ._sqlite_cursors import SqliteCursors

if TYPE_CHECKING:
    from ._postgres_cursors import PostgresCursors
else:
    # Hidden from type checkers, which then still report a misspelt name.
    __getattr__ = lazy_names(__name__, {"PostgresCursors": "._postgres_cursors"})

__all__ = [
    "Clear",
    "Cursor",
    "CursorStore",
    "Lag",
    "LagGauges",
    "PostgresCursors",
    "ProjectionProcess",
    "ProjectionRunner",
    "RunnerOptions",
    "SqliteCursors",
    "TransactionalCursors",
    "lags",
    "open_cursors",
]
