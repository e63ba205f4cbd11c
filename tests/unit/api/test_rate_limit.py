"""Token buckets: a burst, then the sustained rate, per token."""

from __future__ import annotations

import pytest

from dpgate_server.api.rate_limit import TokenBuckets


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_is_allowed_then_refused_with_a_hint() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate_per_second=2.0, burst=3, clock=clock)
    assert [buckets.take("t").allowed for _ in range(3)] == [True, True, True]
    refused = buckets.take("t")
    assert not refused.allowed
    assert refused.retry_after_seconds == pytest.approx(0.5)


def test_tokens_refill_at_the_rate() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate_per_second=2.0, burst=1, clock=clock)
    assert buckets.take("t").allowed
    assert not buckets.take("t").allowed
    clock.now = 0.5
    assert buckets.take("t").allowed


def test_each_token_has_its_own_bucket() -> None:
    buckets = TokenBuckets(rate_per_second=1.0, burst=1, clock=FakeClock())
    assert buckets.take("a").allowed
    assert buckets.take("b").allowed
    assert not buckets.take("a").allowed


def test_buckets_of_many_keys_stay_bounded_and_refilled_ones_are_forgotten() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate_per_second=1.0, burst=2, clock=lambda: now[0], max_keys=100)
    for i in range(1_000):
        buckets.take(f"198.51.100.{i}")
    assert len(buckets) <= 100
    now[0] += 2.0  # every bucket has refilled: forgetting one changes nothing for its key
    buckets.take("203.0.113.1")
    assert len(buckets) <= 100


def test_forgetting_others_keeps_an_active_keys_state() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate_per_second=0.001, burst=1, clock=lambda: now[0], max_keys=10)
    assert buckets.take("busy").allowed
    for i in range(50):
        buckets.take(f"other-{i}")
        assert not buckets.take("busy").allowed  # still empty, never handed a fresh burst
