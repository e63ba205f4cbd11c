"""Administrative operations: allocations, caps with reasons, reports."""

from __future__ import annotations

import datetime as dt

import pytest

from dpgate_server.ledger import (
    AllocationBelowSpent,
    AlreadyExists,
    CapBelowSpent,
    InvalidAmount,
    MissingPurpose,
    MissingReason,
    Outcome,
    RequestInfo,
    Role,
    SelfGrantForbidden,
)
from dpgate_server.vocabulary.accounting import Accounting


def test_top_up_adds_to_the_grant(setup):
    updated = setup.ledger.admin.top_up_allocation(
        "alice", setup.dataset, 500, request=setup.operator
    )
    assert updated.granted_units == 1_500
    assert setup.ledger.get_budget("alice", setup.dataset).remaining_units == 1_500


def test_grant_or_top_up_creates_a_missing_allocation(setup):
    setup.ledger.admin.create_requester(
        "carol", name="C", organisation="O", agreement="A", request=setup.operator
    )
    admin = setup.ledger.admin
    with pytest.raises(MissingPurpose):
        admin.grant_or_top_up("carol", setup.dataset, 5, request=setup.operator)
    created = admin.grant_or_top_up(
        "carol", setup.dataset, 0, request=setup.operator, purpose="audit", agreement="DSA-2"
    )
    assert (created.granted_units, created.spent_units, created.expires_at) == (0, 0, None)
    assert (created.purpose, created.agreement) == ("audit", "DSA-2")


def test_grant_or_top_up_tops_up_and_sets_the_expiry_in_one_event(setup):
    expiry = setup.clock.now + dt.timedelta(days=30)
    before = setup.ledger.head().count
    updated = setup.ledger.admin.grant_or_top_up(
        "alice", setup.dataset, 500, request=setup.operator, expires_at=expiry
    )
    assert (updated.granted_units, updated.expires_at) == (1_500, expiry)
    [event] = setup.ledger.list_events(after_seq=before)
    assert event.detail.startswith("top up alice")
    budget = setup.ledger.get_budget("alice", setup.dataset)
    assert (budget.granted_units, budget.expires_at) == (1_500, expiry)


def test_grant_or_top_up_keeps_the_expiry_when_none_is_given(setup):
    expiry = setup.clock.now + dt.timedelta(days=30)
    admin = setup.ledger.admin
    admin.set_allocation_expiry("alice", setup.dataset, expiry, request=setup.operator)
    updated = admin.grant_or_top_up("alice", setup.dataset, 1, request=setup.operator)
    assert (updated.granted_units, updated.expires_at) == (1_001, expiry)


def test_grant_or_top_up_of_nothing_on_an_allocation_changes_nothing(setup):
    before = setup.ledger.head().count
    with pytest.raises(InvalidAmount):
        setup.ledger.admin.grant_or_top_up(
            "alice", setup.dataset, 0, request=setup.operator, expires_at=setup.clock.now
        )
    budget = setup.ledger.get_budget("alice", setup.dataset)
    assert (budget.granted_units, budget.expires_at) == (1_000, None)
    assert setup.ledger.head().count == before


def test_reduce_goes_down_to_what_is_spent(setup):
    setup.charge(setup.alice, "k1", 400)
    updated = setup.ledger.admin.reduce_allocation(
        "alice", setup.dataset, 600, request=setup.operator
    )
    assert (updated.granted_units, updated.spent_units) == (400, 400)


def test_reduce_below_spent_is_refused(setup):
    setup.charge(setup.alice, "k1", 400)
    with pytest.raises(AllocationBelowSpent):
        setup.ledger.admin.reduce_allocation("alice", setup.dataset, 601, request=setup.operator)
    assert setup.ledger.get_budget("alice", setup.dataset).granted_units == 1_000


def test_second_grant_on_the_same_dataset_is_refused(setup):
    with pytest.raises(AlreadyExists):
        setup.ledger.admin.grant_allocation(
            "alice",
            setup.dataset,
            5,
            request=setup.operator,
            purpose="testing",
            agreement="DSA-TEST",
        )


def test_raising_a_cap_is_recorded_with_its_reason(setup):
    setup.ledger.admin.set_dataset_cap(
        setup.dataset, 20_000, reason="board approved Q2 budget", request=setup.operator
    )
    history = setup.ledger.admin.cap_history(setup.dataset)
    assert [(c.cap_before_units, c.cap_after_units, c.reason) for c in history] == [
        (0, 10_000, "initial"),
        (10_000, 20_000, "board approved Q2 budget"),
    ]
    assert (
        "board approved Q2 budget"
        in setup.ledger.list_events(after_seq=setup.ledger.head().count - 1)[0].detail
    )


def test_cap_change_without_reason_is_refused(setup):
    with pytest.raises(MissingReason):
        setup.ledger.admin.set_dataset_cap(
            setup.dataset, 20_000, reason=" ", request=setup.operator
        )


def test_cap_cannot_go_below_spent(setup):
    setup.charge(setup.alice, "k1", 700)
    with pytest.raises(CapBelowSpent):
        setup.ledger.admin.set_dataset_cap(setup.dataset, 699, reason="x", request=setup.operator)


def test_admin_cannot_top_up_their_own_budget(setup):
    issued = setup.ledger.admin.issue_token("alice", Role.ADMIN, request=setup.operator)
    admin = setup.ledger.authenticate(issued.token)
    request = RequestInfo(request_id="r", rpc="TopUpAllocation", principal=admin)
    with pytest.raises(SelfGrantForbidden):
        setup.ledger.admin.top_up_allocation("alice", setup.dataset, 5, request=request)
    setup.ledger.admin.top_up_allocation("bob", setup.dataset, 5, request=request)


def test_every_admin_change_is_in_the_audit_chain(setup):
    before = setup.ledger.head().count
    setup.ledger.admin.top_up_allocation("bob", setup.dataset, 5, request=setup.operator)
    (event,) = setup.ledger.list_events(after_seq=before)
    assert event.outcome is Outcome.ANSWERED
    assert "top up bob" in event.detail


def test_failed_admin_change_records_nothing(setup):
    before = setup.ledger.head()
    with pytest.raises(AllocationBelowSpent):
        setup.ledger.admin.reduce_allocation("alice", setup.dataset, 5_000, request=setup.operator)
    assert setup.ledger.head() == before


def test_spending_report_lists_each_requester_and_dataset(setup):
    setup.charge(setup.alice, "k1", 100)
    setup.charge(setup.alice, "k2", 50)
    setup.charge(setup.bob, "k3", 10)
    report = setup.ledger.admin.spending_report()
    lines = {(line.requester_id, line.spent_units, line.releases) for line in report.lines}
    assert lines == {("alice", 150, 2), ("bob", 10, 1)}
    (totals,) = report.datasets
    assert (totals.cap_units, totals.spent_units, totals.releases) == (10_000, 160, 3)


def test_list_releases_filters_by_requester(setup):
    setup.charge(setup.alice, "k1", 100)
    setup.charge(setup.bob, "k2", 100)
    assert [r.release_key for r in setup.ledger.admin.list_releases(requester_id="bob")] == ["k2"]
    assert len(setup.ledger.admin.list_releases()) == 2


def test_zcdp_dataset_is_kept_apart(setup):
    setup.ledger.admin.create_dataset(
        "other", accounting=Accounting.ZCDP, cap_units=50, reason="new", request=setup.operator
    )
    setup.ledger.admin.grant_allocation(
        "alice", "other", 50, request=setup.operator, purpose="testing", agreement="DSA-TEST"
    )
    setup.charge(setup.alice, "k1", 1_000)
    budget = setup.ledger.get_budget("alice", "other")
    assert budget.remaining_units == 50
