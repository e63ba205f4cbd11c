"""Per-token rate limiting: a token bucket for each token id.

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


class TokenBuckets:
    """Thread-safe token buckets keyed by token id."""

    def __init__(
        self, rate_per_second: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate_per_second
        self._burst = float(burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> RateDecision:
        """Spend one call from `key`'s bucket if it has one."""
        now = self._clock()
        with self._lock:
            level, last = self._buckets.get(key, (self._burst, now))
            level = min(self._burst, level + (now - last) * self._rate)
            if level >= 1.0:
                self._buckets[key] = (level - 1.0, now)
                return RateDecision(True, 0.0)
            self._buckets[key] = (level, now)
            return RateDecision(False, (1.0 - level) / self._rate)
