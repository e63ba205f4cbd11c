"""A burst of unauthenticated requests is aggregated and cannot fill the disk."""

from __future__ import annotations

import datetime as dt
import re
import threading

import pytest

from dpgate_server.ledger import (
    AlreadyExists,
    Outcome,
    RequestInfo,
    UnauthenticatedFlusher,
    UnauthenticatedPolicy,
)
from dpgate_server.ledger.unauthenticated import OTHER_SOURCES


def _knock(setup, source, times=1):
    for i in range(times):
        setup.ledger.record_unauthenticated(
            RequestInfo(request_id=f"u{i}", rpc="RunQuery", source=source)
        )


def _unauthenticated_events(setup):
    return [
        e for e in setup.ledger.list_events(limit=100_000) if e.outcome is Outcome.UNAUTHENTICATED
    ]


def _count(event):
    return int(re.match(r"(\d+) unauthenticated", event.detail).group(1))


def test_burst_from_one_source_becomes_one_event_per_window(setup):
    _knock(setup, "203.0.113.7", times=500)
    setup.clock.advance(minutes=1)
    setup.ledger.flush_unauthenticated()
    (event,) = _unauthenticated_events(setup)
    assert _count(event) == 500
    assert "203.0.113.7" in event.detail


def test_open_window_is_not_chained_until_it_closes(setup):
    _knock(setup, "203.0.113.7", times=3)
    setup.ledger.flush_unauthenticated()
    assert _unauthenticated_events(setup) == []


def test_any_later_write_chains_closed_windows(setup):
    _knock(setup, "203.0.113.7", times=2)
    setup.clock.advance(minutes=2)
    setup.charge(setup.alice, "k1", 1)
    (event,) = _unauthenticated_events(setup)
    assert _count(event) == 2
    assert setup.ledger.verify().ok


def test_many_sources_are_bounded_per_window(setup):
    for i in range(200):
        _knock(setup, f"198.51.100.{i}")
    setup.clock.advance(minutes=1)
    setup.ledger.flush_unauthenticated()
    events = _unauthenticated_events(setup)
    assert len(events) == 17  # 16 named sources + one for the rest
    assert sum(_count(e) for e in events) == 200
    assert sum(OTHER_SOURCES in e.detail for e in events) == 1


def test_sustained_flood_grows_the_chain_by_a_bounded_rate(setup):
    start = setup.ledger.head().count
    for _ in range(10):
        for i in range(40):
            _knock(setup, f"198.51.100.{i}", times=2)
        setup.clock.advance(minutes=1)
    setup.ledger.flush_unauthenticated()
    assert setup.ledger.head().count - start == 10 * 17


def test_transparency_report_flushes_closed_windows_first(setup):
    _knock(setup, "203.0.113.7")
    setup.clock.advance(minutes=1)
    report = setup.ledger.transparency_report()
    assert report.head == setup.ledger.head()
    assert len(_unauthenticated_events(setup)) == 1


def test_counting_takes_no_write_lock(setup):
    # Held by another connection past the busy timeout, the write lock would make any
    # writer fail with LedgerBusy; an unauthenticated request is only counted in memory.
    setup.ledger.close()
    with setup.store.write_lock_held(), setup.store.open(busy_timeout_s=0.05) as ledger:
        for i in range(100):
            ledger.record_unauthenticated(
                RequestInfo(request_id=f"u{i}", rpc="RunQuery", source="203.0.113.7")
            )


def test_counting_writes_nothing_until_the_window_closes(setup):
    before = setup.ledger.head()
    _knock(setup, "203.0.113.7", times=50)
    assert setup.ledger.head() == before
    assert setup.ledger.flush_unauthenticated() == 0


def test_shutdown_chains_the_open_window_too(setup):
    _knock(setup, "203.0.113.7", times=4)
    assert setup.ledger.flush_unauthenticated(everything=True) == 1
    (event,) = _unauthenticated_events(setup)
    assert _count(event) == 4
    assert setup.ledger.flush_unauthenticated(everything=True) == 0


def test_counts_of_a_write_that_fails_are_kept_for_the_next(setup):
    _knock(setup, "203.0.113.7", times=3)
    setup.clock.advance(minutes=1)
    with pytest.raises(AlreadyExists):  # chained on entry, then rolled back
        setup.ledger.admin.create_requester(
            "alice", name="A", organisation="O", agreement="A", request=setup.operator
        )
    assert _unauthenticated_events(setup) == []
    setup.ledger.flush_unauthenticated()
    (event,) = _unauthenticated_events(setup)
    assert _count(event) == 3


def test_counts_stored_by_an_earlier_version_are_chained_when_the_ledger_opens(setup):
    setup.store.execute(
        "INSERT INTO unauthenticated_pending VALUES (?, ?, ?, ?, ?, ?)",
        "198.51.100.9",
        "2025-01-06T08:00:00.000000Z",
        7,
        "RunQuery",
        "u-old",
        "2025-01-06T08:00:30.000000Z",
    )
    with setup.store.open(clock=setup.clock) as reopened:
        events = [
            e for e in reopened.list_events(limit=1_000) if e.outcome is Outcome.UNAUTHENTICATED
        ]
        assert reopened.verify().ok
    assert [(_count(e), e.request_id) for e in events] == [(7, "u-old")]
    assert "198.51.100.9" in events[0].detail
    assert setup.store.fetch("SELECT count(*) FROM unauthenticated_pending") == [(0,)]


def test_the_flusher_waits_until_just_after_the_window_ends():
    policy = UnauthenticatedPolicy()
    at = dt.datetime(2025, 1, 6, 9, 0, 45, tzinfo=dt.UTC)
    flusher = UnauthenticatedFlusher(lambda: 0, policy, clock=lambda: at)
    assert flusher.seconds_to_next_flush() == pytest.approx(15.5)


def test_the_flusher_chains_a_closed_window_without_any_other_write(setup):
    _knock(setup, "203.0.113.7", times=2)
    flushed = threading.Event()

    def flush() -> int:
        setup.clock.advance(minutes=1)  # the window ends while the flusher sleeps
        chained = setup.ledger.flush_unauthenticated()
        flushed.set()
        return chained

    flusher = UnauthenticatedFlusher(
        flush, UnauthenticatedPolicy(window=dt.timedelta(milliseconds=50)), delay=dt.timedelta(0)
    )
    flusher.start()
    try:
        assert flushed.wait(10)
    finally:
        flusher.stop()
    (event,) = _unauthenticated_events(setup)
    assert _count(event) == 2
