"""Retrying a call the server could not serve: exponential backoff with full jitter.

Only `OverloadedError` and `ServerUnavailableError` are retried: a busy or unreachable
server may serve the same request a moment later. A budget refusal, an invalid request
or a permission error would be refused again, so they are raised at once. The caller
sends the same request on every attempt, so a query keeps its idempotency key and is
charged at most once however many attempts reached the server.

The wait before retry `n` (from 0) is drawn uniformly from [0, min(max_backoff,
initial_backoff * multiplier**n)] ("full jitter": clients that failed together do not
come back together), and is never shorter than the server's `retry_after` hint.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from dpgate.errors import RETRYABLE, DpgateError

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a call is retried.

    Attributes:
        retries: retries after the first attempt (0: never retry).
        initial_backoff: the largest wait, in seconds, before the first retry.
        multiplier: how much the largest wait grows with each retry.
        max_backoff: the longest any single wait may be, in seconds.
    """

    retries: int = 3
    initial_backoff: float = 0.5
    multiplier: float = 2.0
    max_backoff: float = 30.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError("retries must be 0 or more")
        if not 0 < self.initial_backoff <= self.max_backoff or self.multiplier < 1:
            raise ValueError("need 0 < initial_backoff <= max_backoff and multiplier >= 1")

    def delay(self, retry: int, hint: float | None, uniform: Callable[[], float]) -> float:
        """Seconds to wait before retry number `retry` (from 0); `uniform` draws in [0, 1)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier**retry)
        jittered = uniform() * ceiling
        return min(self.max_backoff, max(jittered, hint or 0.0))


def call_with_retries(
    call: Callable[[], _T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] | None = None,
    uniform: Callable[[], float] = random.random,
) -> _T:
    """`call()`, retried after a retryable error as `policy` allows; else its error.

    `sleep` defaults to `time.sleep`, looked up at each wait.
    """
    for retry in range(policy.retries + 1):
        try:
            return call()
        except RETRYABLE as error:
            if retry == policy.retries:
                raise
            (sleep or time.sleep)(policy.delay(retry, _hint(error), uniform))
    raise AssertionError("unreachable")  # pragma: no cover


def _hint(error: DpgateError) -> float | None:
    value = error.metadata.get("retry_after_seconds")
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None
