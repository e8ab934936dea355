"""``chaos.app``'s volatile entity: ticked by a periodic timer from its first bump to its
last (or for at most MAX_TICKS ticks), so that ticks fall due while it is parked."""

from __future__ import annotations

import pytest

from chaos.app import BUMPS, MAX_TICKS, TICK_EVERY, TICKS, Bump, Bumped, Tick, Ticked, Volatile
from pachyderm import Cancel, Schedule
from pachyderm.testing import given

pytestmark = pytest.mark.chaos


def test_the_first_bump_starts_the_ticks_and_the_last_ends_them() -> None:
    started = given(Volatile).when(Bump())
    started.then(events=[Bumped()], scheduled=[Schedule(Tick(), every=TICK_EVERY, key=TICKS)])
    ticking = started.after(seconds=1.2).then(events=[Ticked(), Ticked()])
    assert [timer.key for timer in ticking.pending] == [TICKS]
    last = given(Volatile, *[Bumped()] * (BUMPS - 1)).when(Bump())
    last.then(events=[Bumped()], effects=[Cancel(TICKS)])


def test_the_ticks_end_by_themselves() -> None:
    ticked = given(Volatile, Bumped(), *[Ticked()] * (MAX_TICKS - 1))
    ticked.when(Tick()).then(events=[Ticked()], effects=[Cancel(TICKS)])
    given(Volatile, Bumped(), Ticked()).when(Tick()).then(events=[Ticked()], effects=[])
