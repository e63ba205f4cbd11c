"""A bounded least-recently-used cache for work that repeated questions would redo.

The answerer keeps prepared queries per dataset version and decoded releases per stored
release in these. Both are pure functions of immutable inputs (a version never changes; a
stored release never changes), so an entry is never stale, only old: the bound evicts it.
A cache saves decoding and pricing work only; it is never asked whether a requester may
have an answer (the ledger decides that on every request, before the cache is read).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _one(_value: object) -> int:
    return 1


class LruCache(Generic[K, V]):
    """At most `capacity` total weight of entries; the least recently used go first.

    `weigh` gives an entry's weight (1 each by default: the capacity is then a count). An
    entry heavier than the whole capacity is not kept; a capacity of 0 keeps nothing.
    Safe to share between threads.
    """

    def __init__(self, capacity: int, weigh: Callable[[V], int] = _one) -> None:
        if capacity < 0:
            raise ValueError("a cache's capacity is at least 0")
        self._capacity = capacity
        self._weigh = weigh
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def weight(self) -> int:
        """The total weight held now (never above `capacity`)."""
        return self._weight

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: K, value: V) -> None:
        weight = self._weigh(value)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._weight -= old[1]
            if weight > self._capacity:
                return
            self._entries[key] = (value, weight)
            self._weight += weight
            while self._weight > self._capacity:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._weight -= dropped

    def discard(self, key: K) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._weight -= old[1]
