"""The transparency export: every answered query and its spend, the head, never a value."""

from __future__ import annotations

import csv
import io
import json

import pytest

from dpgate_server.ledger import Outcome

SECRET_VALUE = b"noisy-value-12345.678"


@pytest.fixture
def busy(setup):
    setup.charge(setup.alice, "k1", 250, payload=SECRET_VALUE)
    setup.charge(setup.bob, "k2", 100, payload=SECRET_VALUE)
    setup.charge(setup.bob, "k1", 250)  # free: shared release
    setup.ledger.record_event(setup.request(setup.bob, "bad query"), Outcome.INVALID)
    return setup


def test_json_export_lists_answered_queries_with_cumulative_spend(busy):
    data = json.loads(busy.ledger.transparency_report().to_json())
    rows = [
        (q["organisation"], q["query"], q["spend_units"], q["cumulative_spend_units"])
        for q in data["queries"]
    ]
    assert rows == [
        ("alice org", "query k1", 250, 250),
        ("bob org", "query k2", 100, 350),
        ("bob org", "query k1", 0, 350),
    ]
    assert data["queries"][0]["spend"] == "0.00000025"


def test_export_includes_the_head(busy):
    report = busy.ledger.transparency_report()
    data = json.loads(report.to_json())
    assert data["head"] == {"count": report.head.count, "hash": report.head.hash}
    assert report.head == busy.ledger.head()


def test_export_never_contains_a_released_value(busy):
    report = busy.ledger.transparency_report()
    assert SECRET_VALUE.decode() not in report.to_json()
    assert SECRET_VALUE.decode() not in report.to_csv()


def test_export_leaves_out_unanswered_requests(busy):
    report = busy.ledger.transparency_report()
    assert "bad query" not in report.to_json()


def test_csv_export_has_head_dataset_and_query_records(busy):
    report = busy.ledger.transparency_report()
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert [r["record"] for r in rows] == ["head", "dataset", "query", "query", "query"]
    assert (rows[0]["seq"], rows[0]["event_hash"]) == (str(report.head.count), report.head.hash)
    assert (rows[1]["spend_units"], rows[1]["cap_units"]) == ("350", "10000")
    assert rows[-1]["cumulative_spend_units"] == "350"


def test_exported_head_later_verifies_the_chain(busy):
    head = busy.ledger.transparency_report().head
    busy.charge(busy.alice, "k9", 1)
    assert busy.ledger.verify(expected_head=head).ok
