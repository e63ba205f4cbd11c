"""Rate limiting: a token bucket per key (a token id, or a client's address).

A limited call is answered UNAVAILABLE (reason RATE_LIMITED) with a retry hint, never
RESOURCE_EXHAUSTED, which is reserved for budgets: a script must never mistake "slow down"
for "you have no budget left".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateDecision:
    """Whether a call may proceed, and if not, how long until it would."""

    allowed: bool
    retry_after_seconds: float


DEFAULT_MAX_KEYS = 100_000
"""Buckets kept at most (a few MB); past it, buckets that have refilled are forgotten."""


class TokenBuckets:
    """Thread-safe token buckets keyed by a string (a token id, or a client's address).

    Memory is bounded by `max_keys`: keys are cheap to make up (addresses, garbage
    tokens), so when there are more buckets, the full ones are dropped (a dropped bucket
    was full, and a new one starts full: nothing changes for its key), then, if that is
    not enough, the least recently used half (those keys get a fresh burst).
    """

    def __init__(
        self,
        rate_per_second: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        self._rate = rate_per_second
        self._burst = float(burst)
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> RateDecision:
        """Spend one call from `key`'s bucket if it has one."""
        now = self._clock()
        with self._lock:
            level, last = self._buckets.get(key, (self._burst, now))
            level = min(self._burst, level + (now - last) * self._rate)
            self._buckets.pop(key, None)  # re-inserted last: the dict is in order of use
            if len(self._buckets) >= self._max_keys:
                self._forget(now)
            if level >= 1.0:
                self._buckets[key] = (level - 1.0, now)
                return RateDecision(True, 0.0)
            self._buckets[key] = (level, now)
            return RateDecision(False, (1.0 - level) / self._rate)

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)

    def _forget(self, now: float) -> None:
        refill_s = self._burst / self._rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill_s}
        if len(self._buckets) >= self._max_keys:
            keep = list(self._buckets.items())[len(self._buckets) // 2 :]
            self._buckets = dict(keep)
