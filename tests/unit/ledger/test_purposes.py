"""Allocations carry a purpose and an agreement: required when new, migrated as "not recorded".

Each test runs on SQLite and on PostgreSQL (`ledger_store`).
"""

from __future__ import annotations

from typing import Any

import pytest

from dpgate_server.ledger.errors import MissingPurpose
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import NOT_RECORDED, RequestInfo
from dpgate_server.vocabulary.accounting import Accounting

OPERATOR = RequestInfo(request_id="op", rpc="test")


def _prepared(ledger: Ledger) -> Ledger:
    ledger.admin.create_requester(
        "alice", name="Alice", organisation="Trust", agreement="old", request=OPERATOR
    )
    ledger.admin.create_dataset(
        "d", accounting=Accounting.PURE_DP, cap_units=100, reason="test", request=OPERATOR
    )
    return ledger


@pytest.mark.parametrize(("purpose", "agreement"), [("", "DSA-1"), ("planning", " "), ("", "")])
def test_new_allocation_needs_purpose_and_agreement(
    ledger_store: Any, purpose: str, agreement: str
) -> None:
    with _prepared(ledger_store.open()) as ledger:
        with pytest.raises(MissingPurpose, match="purpose and its agreement"):
            ledger.admin.grant_allocation(
                "alice", "d", 10, request=OPERATOR, purpose=purpose, agreement=agreement
            )
        assert ledger.admin.spending_report().lines == ()


def test_purpose_and_agreement_are_stored_reported_and_chained(ledger_store: Any) -> None:
    with _prepared(ledger_store.open()) as ledger:
        ledger.admin.grant_allocation(
            "alice", "d", 10, request=OPERATOR, purpose=" winter planning ", agreement="DSA-7"
        )
        ledger.admin.top_up_allocation("alice", "d", 5, request=OPERATOR)
        (line,) = ledger.admin.spending_report().lines
        assert (line.purpose, line.agreement) == ("winter planning", "DSA-7")
        assert line.granted_units == 15
        grant = ledger.list_events(ledger.head().count - 2, 1)[0]
        assert "purpose 'winter planning' agreement 'DSA-7'" in grant.detail


def test_allocations_made_before_purposes_migrate_as_not_recorded(ledger_store: Any) -> None:
    with _prepared(ledger_store.open()) as ledger:
        ledger.admin.grant_allocation(
            "alice", "d", 10, request=OPERATOR, purpose="dropped", agreement="dropped"
        )
    # Back to the schema before migration 2, as an older dpgate left it.
    ledger_store.execute("DROP INDEX idempotency_keys_by_release")  # 7
    ledger_store.execute("DROP INDEX releases_by_version")
    ledger_store.execute("ALTER TABLE releases DROP COLUMN dataset_version")
    ledger_store.execute("DROP TABLE publish_spends")  # 6
    ledger_store.execute("DROP TABLE derived_answers")  # 5
    ledger_store.execute("DROP TABLE current_versions")  # 4
    for column in ("first_repeat", "first_remaining_units", "first_charged_units"):
        ledger_store.execute(f"ALTER TABLE idempotency_keys DROP COLUMN {column}")  # 3
    ledger_store.execute("ALTER TABLE allocations DROP COLUMN purpose")
    ledger_store.execute("ALTER TABLE allocations DROP COLUMN agreement")
    ledger_store.execute("DELETE FROM schema_version WHERE version >= 2")
    with ledger_store.open() as ledger:
        (line,) = ledger.admin.spending_report().lines
        assert (line.purpose, line.agreement) == (NOT_RECORDED, NOT_RECORDED)
        assert line.granted_units == 10
