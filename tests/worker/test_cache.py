from pachyderm import Ref
from pachyderm.worker import EntityCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def ref(n: int) -> Ref:
    return Ref.from_key("counter", str(n))


def test_the_cache_keeps_at_most_its_capacity_dropping_the_least_recently_used() -> None:
    cache = EntityCache(capacity=3, clock=Clock())
    for n in range(3):
        cache.put(ref(n), {"n": n}, n)
    assert cache.get(ref(0)) is not None  # 0 is now the most recently used
    cache.put(ref(3), {"n": 3}, 3)
    assert len(cache) == 3
    assert ref(1) not in cache
    assert [r in cache for r in (ref(0), ref(2), ref(3))] == [True, True, True]


def test_idle_entities_are_unloaded_after_the_timeout() -> None:
    clock = Clock()
    cache = EntityCache(capacity=10, idle_timeout=60, clock=clock)
    cache.put(ref(1), "old", 1)
    clock.now = 30
    cache.put(ref(2), "newer", 1)
    clock.now = 61
    assert cache.unload_idle() == 1
    assert ref(1) not in cache
    assert ref(2) in cache
    clock.now = 85
    cache.get(ref(2))  # using it keeps it loaded
    clock.now = 140
    assert cache.unload_idle() == 0
    clock.now = 146
    assert cache.unload_idle() == 1
    assert len(cache) == 0


def test_a_cached_state_comes_back_with_its_version() -> None:
    cache = EntityCache(clock=Clock())
    cache.put(ref(1), {"count": 3}, 7)
    hot = cache.get(ref(1))
    assert hot is not None
    assert (hot.state, hot.version) == ({"count": 3}, 7)
    cache.forget([ref(1)])
    assert cache.get(ref(1)) is None
