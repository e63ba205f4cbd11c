"""Administrative operations: allocations, caps with reasons, reports."""

from __future__ import annotations

import datetime as dt

import pytest

from dpgate_server.ledger import (
    AllocationBelowSpent,
    AlreadyExists,
    CapBelowAllocated,
    CapBelowSpent,
    ExpiryInThePast,
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
    with pytest.raises(InvalidAmount, match="an expiry to change only the expiry"):
        setup.ledger.admin.grant_or_top_up("alice", setup.dataset, 0, request=setup.operator)
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


# -- expiries, zero grants, caps below allocations, the report's extra columns ----------


@pytest.mark.parametrize("offset", [dt.timedelta(0), dt.timedelta(seconds=-1)])
def test_an_expiry_that_is_not_in_the_future_is_refused_everywhere(setup, offset):
    when = setup.clock.now + offset
    admin, before = setup.ledger.admin, setup.ledger.head()
    with pytest.raises(ExpiryInThePast, match="not in the future"):
        admin.issue_token("alice", Role.ANALYST, request=setup.operator, expires_at=when)
    with pytest.raises(ExpiryInThePast):
        admin.grant_or_top_up("alice", setup.dataset, 5, request=setup.operator, expires_at=when)
    with pytest.raises(ExpiryInThePast):
        admin.set_allocation_expiry("alice", setup.dataset, when, request=setup.operator)
    admin.create_requester(
        "carol", name="C", organisation="O", agreement="A", request=setup.operator
    )
    after_create = setup.ledger.head()
    with pytest.raises(ExpiryInThePast):
        admin.grant_allocation(
            "carol",
            setup.dataset,
            5,
            request=setup.operator,
            purpose="p",
            agreement="a",
            expires_at=when,
        )
    assert setup.ledger.head() == after_create != before
    assert setup.ledger.get_budget("alice", setup.dataset).granted_units == 1_000


def test_a_future_expiry_is_accepted(setup):
    later = setup.clock.now + dt.timedelta(seconds=1)
    issued = setup.ledger.admin.issue_token(
        "alice", Role.ANALYST, request=setup.operator, expires_at=later
    )
    assert issued.info.expires_at == later


def test_a_zero_top_up_with_an_expiry_changes_only_the_expiry(setup):
    expiry = setup.clock.now + dt.timedelta(days=90)
    before = setup.ledger.head().count
    updated = setup.ledger.admin.grant_or_top_up(
        "alice", setup.dataset, 0, request=setup.operator, expires_at=expiry
    )
    assert (updated.granted_units, updated.expires_at) == (1_000, expiry)
    [event] = setup.ledger.list_events(after_seq=before)
    assert event.detail.startswith("set expiry of alice on gp_appointments to 2025-04-06")


def test_a_cap_below_the_sum_of_allocations_is_refused_unless_forced(setup):
    admin, before = setup.ledger.admin, setup.ledger.head()
    with pytest.raises(CapBelowAllocated, match=r"add up to epsilon 0\.000002"):
        admin.set_dataset_cap(setup.dataset, 1_999, reason="tighter", request=setup.operator)
    assert setup.ledger.head() == before
    admin.set_dataset_cap(setup.dataset, 2_000, reason="exactly", request=setup.operator)
    admin.set_dataset_cap(
        setup.dataset, 1_500, reason="over-subscribe", request=setup.operator, force=True
    )
    assert setup.ledger.get_dataset(setup.dataset).cap_units == 1_500
    [event] = setup.ledger.list_events(after_seq=setup.ledger.head().count - 1)
    assert "(forced below epsilon 0.000002 allocated)" in event.detail


def test_spending_report_shows_remaining_expiry_and_last_spend(setup):
    setup.charge(setup.alice, "k1", 100)
    setup.clock.advance(hours=2)
    setup.charge(setup.alice, "k2", 50)
    last = setup.clock.now
    expiry = last + dt.timedelta(days=1)
    setup.ledger.admin.set_allocation_expiry("bob", setup.dataset, expiry, request=setup.operator)
    report = setup.ledger.admin.spending_report()
    lines = {line.requester_id: line for line in report.lines}
    alice, bob = lines["alice"], lines["bob"]
    assert (alice.remaining_units, alice.last_spend_at, alice.expires_at) == (850, last, None)
    assert (bob.remaining_units, bob.last_spend_at, bob.expires_at) == (1_000, None, expiry)
    setup.clock.advance(days=2)
    expired = {x.requester_id: x for x in setup.ledger.admin.spending_report().lines}["bob"]
    assert expired.remaining_units == 0
    (totals,) = report.datasets
    assert (totals.allocated_units, totals.allocations, totals.share_releases) == (2_000, 2, True)
