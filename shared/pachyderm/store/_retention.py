"""What the store keeps for a window only: command ids, published outbox rows, and
the quarantine's leftovers (attempt counts and skipped commands).

Invariant: pruning deletes only rows older than the window it is given, oldest
first, at most ``limit`` of them per call, each call its own short transaction;
it never waits for a commit and never touches an unpublished effect.
"""

from __future__ import annotations

from typing import Literal, get_args

Retained = Literal["commands", "effects", "attempts", "quarantine"]
"""What is pruned: ``commands`` (the command ids and their stored replies),
``effects`` (outbox rows already published), ``attempts`` (attempt counts of
redelivered commands, by their last attempt: one left behind when its command
was never answered, e.g. quarantined, or its caller gave up) or ``quarantine``
(quarantined commands an operator skipped, by the decision's time). Both
quarantine leftovers are kept the command window: a copy of such a command
arriving later is refused as expired before it could use them."""

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
