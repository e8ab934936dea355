"""What the store keeps for a window only: command ids and published outbox rows.

Invariant: pruning deletes only rows older than the window it is given, oldest
first, at most ``limit`` of them per call, each call its own short transaction;
it never waits for a commit and never touches an unpublished effect.
"""

from __future__ import annotations

from typing import Literal, get_args

Retained = Literal["commands", "effects"]
"""What is pruned: ``commands`` (the command ids and their stored replies) or
``effects`` (outbox rows already published)."""

RETAINED: tuple[Retained, ...] = get_args(Retained)


def check_retained(retained: str) -> Retained:
    """``retained`` if it names what is pruned, else :class:`ValueError`."""
    for known in RETAINED:
        if retained == known:
            return known
    raise ValueError(f"nothing called {retained!r} is pruned; only {', '.join(RETAINED)}")


def check_limit(limit: int) -> int:
    """A batch size: at least 1 (a batch is bounded, never "all")."""
    if limit < 1:
        raise ValueError(f"a pruning batch takes at least 1 row, not {limit}")
    return limit
