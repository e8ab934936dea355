"""The testing kit's clock: scheduled timers, and time that passes without sleeping."""

from __future__ import annotations

from datetime import timedelta

import pytest

from examples.reservation import (
    Confirm,
    Confirmed,
    Held,
    Hold,
    Lapse,
    Lapsed,
    Renew,
    Renewed,
    Seat,
    Subscribe,
    Subscribed,
    Subscription,
)
from pachyderm import Cancel, Schedule
from pachyderm.testing import Pending, given
from pachyderm.testing._timeline import START

MINUTE = timedelta(minutes=1)


def test_a_hold_schedules_its_lapse() -> None:
    given(Seat).when(Hold("ann", seconds=60)).then(
        events=[Held("ann")],
        scheduled=[Schedule(Lapse("ann"), after=MINUTE, key="hold")],
        pending=[Pending("hold", Lapse("ann"), START + MINUTE)],
    )


def test_the_hold_lapses_once_its_time_has_passed_and_not_before() -> None:
    held = given(Seat).when(Hold("ann", seconds=60))
    held.after(seconds=59).then(events=[], state={"status": "held", "customer": "ann"})
    lapsed = held.after(minutes=2).then(
        events=[Lapsed("ann")], state={"status": "free", "customer": None}, pending=[]
    )
    assert [timer.due for timer in lapsed.fired] == [START + MINUTE]
    assert lapsed.now == START + 2 * MINUTE


def test_a_confirmed_hold_cancels_its_lapse() -> None:
    confirmed = given(Seat, Held("bob")).when(Confirm("bob"))
    confirmed.then(events=[Confirmed("bob")], effects=[Cancel("hold")], pending=[])
    confirmed.after(hours=1).then(events=[], state={"status": "sold", "customer": "bob"})


def test_a_subscription_renews_on_its_grid() -> None:
    subscribed = given(Subscription).when(Subscribe(every_seconds=60))
    subscribed.then(events=[Subscribed(60)])
    three = subscribed.after(minutes=3, seconds=30)
    three.then(events=[Renewed(0)] * 3)
    assert [timer.due for timer in three.fired] == [START + n * MINUTE for n in (1, 2, 3)]
    assert three.pending == [Pending("renew", Renew(), START + 4 * MINUTE, MINUTE)]


def test_an_outage_fires_one_catch_up_tick_that_counts_the_missed() -> None:
    subscribed = given(Subscription).when(Subscribe(every_seconds=60))
    after = subscribed.after(minutes=10, seconds=30, outage=True)
    after.then(events=[Renewed(9)], state={"active": True, "renewals": 1, "missed": 9})
    assert after.pending[0].due == START + 11 * MINUTE


def test_time_only_moves_forward() -> None:
    with pytest.raises(ValueError, match="forward"):
        given(Seat).when(Hold("ann")).after(-MINUTE)
