"""`in_parallel`: every item once, never more than `jobs` in flight, failures stop it."""

from __future__ import annotations

import threading
import time

import pytest

from dpgate_server.bounded_pool import in_parallel


class InFlight:
    """Counts the items being worked on at once (the most seen is `peak`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.started: list[int] = []

    def work(self, item: int) -> int:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.started.append(item)
        time.sleep(0.01 * (item % 3))  # finishing out of order
        with self.lock:
            self.now -= 1
        if item == 13:
            raise RuntimeError("item 13 failed")
        return item * item


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_every_item_once_with_its_result_and_at_most_jobs_at_once(jobs: int) -> None:
    counter = InFlight()
    results = dict(in_parallel(list(range(12)), counter.work, jobs))
    assert results == {i: i * i for i in range(12)}
    assert counter.peak <= jobs
    assert sorted(counter.started) == list(range(12))


def test_the_consumer_holds_back_new_items() -> None:
    """Items started but not yet taken by the consumer count as in flight."""
    counter = InFlight()
    for taken, _ in enumerate(in_parallel(list(range(8)), counter.work, 2), start=1):
        assert len(counter.started) <= taken + 2


def test_a_failure_is_raised_and_no_later_item_starts() -> None:
    counter = InFlight()
    with pytest.raises(RuntimeError, match="item 13 failed"):
        for _ in in_parallel(list(range(10, 30)), counter.work, 2):
            pass
    assert max(counter.started) <= 13 + 2


def test_jobs_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        list(in_parallel([1], lambda i: i, 0))
