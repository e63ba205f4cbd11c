"""A burst of unauthenticated requests is aggregated and cannot fill the disk."""

from __future__ import annotations

import re

from dpgate_server.ledger import Outcome, RequestInfo
from dpgate_server.ledger._audit import OTHER_SOURCES


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
