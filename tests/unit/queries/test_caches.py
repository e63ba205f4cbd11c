"""The bounded LRU cache behind cheap repeats: never above its capacity, oldest out first."""

from __future__ import annotations

import pytest

from dpgate_server.queries.caches import LruCache


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    assert len(cache) == 2


def test_weight_never_exceeds_the_capacity() -> None:
    cache: LruCache[int, bytes] = LruCache(100, len)
    for i in range(50):
        cache.put(i, b"x" * (i % 30))
        assert cache.weight <= 100
    assert cache.weight == sum(len(v) for v in (cache.get(k) for k in range(50)) if v)


def test_an_entry_heavier_than_the_capacity_is_not_kept() -> None:
    cache: LruCache[str, bytes] = LruCache(10, len)
    cache.put("small", b"12345")
    cache.put("huge", b"x" * 11)
    assert cache.get("huge") is None
    assert cache.get("small") == b"12345"


def test_replacing_an_entry_counts_its_weight_once() -> None:
    cache: LruCache[str, bytes] = LruCache(10, len)
    cache.put("a", b"123456")
    cache.put("a", b"1234567")
    assert (cache.weight, len(cache)) == (7, 1)
    cache.discard("a")
    assert (cache.weight, len(cache), cache.get("a")) == (0, 0, None)


def test_capacity_zero_keeps_nothing() -> None:
    cache: LruCache[str, int] = LruCache(0)
    cache.put("a", 1)
    assert (cache.get("a"), len(cache)) == (None, 0)


def test_a_negative_capacity_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 0"):
        LruCache(-1)
