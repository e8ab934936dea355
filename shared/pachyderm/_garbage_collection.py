"""The cyclic garbage collector of a long-running worker process.

Python's collector runs a generation-0 pass every 700 net allocations of
tracked objects. Under load a worker's in-flight objects (deliveries, futures,
states being decided) live tens of milliseconds: long enough to survive two
passes and be promoted to the oldest generation, which then fills quickly and
is scanned whole, entity cache included. Measured on the timers benchmark (two
workers, 120,000 entities cached): a full pass about once a second, 100 to 300
ms each with the event loop stopped, collecting nothing; every fire and reply
due meanwhile waited (steady timer lateness p99 250 to 300 ms). With the first
threshold at 50,000 the in-flight objects die before a pass sees them: two full
passes in the whole run, lateness p99 70 ms.

Invariants: reference counting still frees every object the moment it is
unreachable; only cycles wait longer (at most one pass per ``threshold`` net
allocations). What exists once the app is loaded (modules, classes, the app's
types) is frozen out of the collector's sight: it lives as long as the process.
"""

from __future__ import annotations

import gc

DEFAULT_THRESHOLD = 50_000


def tune_collector(threshold: int) -> None:
    """Set the first generation's threshold (0: keep Python's own) and freeze what
    is alive now. Call once, after the app is imported."""
    if threshold > 0:
        _, second, third = gc.get_threshold()
        gc.set_threshold(threshold, second, third)
    gc.freeze()
