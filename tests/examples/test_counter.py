from examples.counter import AdminMailer, Counter, Increased, Increment
from pachyderm.testing import given


def test_a_new_counter_counts_from_zero() -> None:
    given(Counter).when(Increment(amount=3)).then(
        events=[Increased(amount=3)], state={"count": 3}, reply={"count": 3}, effects=[]
    )


def test_crossing_ten_notifies_the_admin_once() -> None:
    outcome = given(Counter, Increased(amount=8)).when(Increment(amount=3))
    outcome.then(state={"count": 11}, effects=[AdminMailer.notify(threshold=10)])
    outcome.when(Increment(amount=5)).then(state={"count": 16}, effects=[])


def test_landing_exactly_on_ten_counts_as_crossing() -> None:
    given(Counter, Increased(amount=9)).when(Increment()).then(
        effects=[AdminMailer.notify(threshold=10)]
    )


def test_staying_below_ten_notifies_nobody() -> None:
    given(Counter, Increased(amount=2)).when(Increment(amount=7)).then(
        state={"count": 9}, effects=[]
    )


def test_a_counter_without_threshold_never_notifies() -> None:
    # The benchmark's counter (bench/app.py): the baselines it is compared with have no outbox.
    given(Counter(threshold=None), Increased(amount=8)).when(Increment(amount=3)).then(
        state={"count": 11}, effects=[]
    )


def test_the_threshold_is_the_counter_s_own() -> None:
    given(Counter(threshold=100), Increased(amount=95)).when(Increment(amount=5)).then(
        effects=[AdminMailer.notify(threshold=100)]
    )
    given(Counter(threshold=100), Increased(amount=8)).when(Increment(amount=3)).then(effects=[])
