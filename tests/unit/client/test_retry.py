"""Retries: only what a retry can cure, bounded, backing off with jitter and server hints."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dpgate import (
    BudgetExhaustedError,
    DeadlineExceededError,
    DpgateError,
    InvalidQueryError,
    OverloadedError,
    PermissionDeniedError,
    RetryPolicy,
    ServerUnavailableError,
)
from dpgate._retry import call_with_retries


class Attempts:
    """A call that fails with the given errors in turn, then answers "done"."""

    def __init__(self, *errors: DpgateError) -> None:
        self.errors = list(errors)
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def _run(
    call: Callable[[], str], policy: RetryPolicy, draws: float = 0.5
) -> tuple[str | DpgateError, list[float]]:
    waits: list[float] = []
    try:
        result: str | DpgateError = call_with_retries(
            call, policy, sleep=waits.append, uniform=lambda: draws
        )
    except DpgateError as error:
        result = error
    return result, waits


def test_a_busy_then_free_server_is_answered_after_backing_off() -> None:
    call = Attempts(OverloadedError("busy"), ServerUnavailableError("no route"))
    result, waits = _run(call, RetryPolicy(retries=3, initial_backoff=1.0, multiplier=2.0))
    assert result == "done"
    assert call.count == 3
    assert waits == [0.5, 1.0]  # half (the draw) of 1, then of 2


def test_an_unreachable_server_is_given_up_after_the_retries() -> None:
    call = Attempts(*[ServerUnavailableError("down") for _ in range(10)])
    result, waits = _run(call, RetryPolicy(retries=3))
    assert isinstance(result, ServerUnavailableError)
    assert call.count == 4
    assert len(waits) == 3


@pytest.mark.parametrize(
    "refusal",
    [
        BudgetExhaustedError("costs too much", reason="BUDGET_EXHAUSTED"),
        InvalidQueryError("bad column", reason="UNKNOWN_COLUMN"),
        PermissionDeniedError("wrong role"),
        DeadlineExceededError("too slow", reason="QUERY_TIMEOUT"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_refusals_a_retry_cannot_cure_are_raised_at_once(refusal: DpgateError) -> None:
    call = Attempts(refusal)
    result, waits = _run(call, RetryPolicy(retries=5))
    assert result is refusal
    assert (call.count, waits) == (1, [])


def test_no_retries_means_one_attempt() -> None:
    call = Attempts(OverloadedError("busy"))
    result, waits = _run(call, RetryPolicy(retries=0))
    assert isinstance(result, OverloadedError)
    assert (call.count, waits) == (1, [])


def test_waits_grow_exponentially_up_to_the_cap_and_are_jittered() -> None:
    policy = RetryPolicy(retries=8, initial_backoff=0.5, multiplier=2.0, max_backoff=5.0)
    ceilings = [policy.delay(n, None, lambda: 0.999999) for n in range(8)]
    assert ceilings == pytest.approx([0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0], rel=1e-5)
    assert [policy.delay(n, None, lambda: 0.0) for n in range(8)] == [0.0] * 8


def test_a_server_hint_is_the_shortest_wait() -> None:
    policy = RetryPolicy(initial_backoff=0.5, max_backoff=30.0)
    assert policy.delay(0, 2.0, lambda: 0.5) == 2.0
    assert policy.delay(0, 99.0, lambda: 0.5) == 30.0  # never past the cap
    call = Attempts(OverloadedError("busy", metadata={"retry_after_seconds": "3.000"}))
    result, waits = _run(call, policy)
    assert (result, waits) == ("done", [3.0])


def test_a_malformed_hint_is_ignored() -> None:
    call = Attempts(OverloadedError("busy", metadata={"retry_after_seconds": "soon"}))
    result, waits = _run(call, RetryPolicy(initial_backoff=1.0))
    assert (result, waits) == ("done", [0.5])


@pytest.mark.parametrize(
    "settings",
    [
        {"retries": -1},
        {"initial_backoff": 0.0},
        {"initial_backoff": 5.0, "max_backoff": 1.0},
        {"multiplier": 0.5},
    ],
)
def test_a_policy_that_cannot_work_is_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        RetryPolicy(**settings)  # type: ignore[arg-type]
