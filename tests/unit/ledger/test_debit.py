"""The two-step spend: lookup before computing, then one atomic debit."""

from __future__ import annotations

import datetime as dt

import pytest

from dpgate_server.ledger import (
    BudgetExhausted,
    IdempotencyConflict,
    InvalidAmount,
    Outcome,
    ReleaseKeyConflict,
    RequesterDisabled,
)
from dpgate_server.vocabulary.accounting import Accounting
from dpgate_server.vocabulary.errors import DatasetNotFoundError


def test_debit_charges_the_allocation_and_the_cap(setup):
    result = setup.charge(setup.alice, "k1", 300)
    budget = setup.ledger.get_budget("alice", setup.dataset)
    assert (result.charged_units, result.remaining_units, result.repeat) == (300, 700, False)
    assert (budget.spent_units, budget.remaining_units) == (300, 700)
    assert setup.ledger.get_dataset(setup.dataset).spent_units == 300


def test_debit_stores_the_payload_under_its_key(setup):
    result = setup.charge(setup.alice, "k1", 10, payload=b"\x00noisy\xff")
    stored = setup.ledger.get_release(result.release.release_id)
    assert (stored.payload, stored.release_key, stored.cost_units) == (b"\x00noisy\xff", "k1", 10)


def test_debit_beyond_the_allocation_raises_budget_exhausted_with_remaining(setup):
    setup.charge(setup.alice, "k1", 900)
    with pytest.raises(BudgetExhausted) as raised:
        setup.charge(setup.alice, "k2", 101)
    assert (raised.value.requested_units, raised.value.remaining_units) == (101, 100)


def test_debit_of_exactly_the_remainder_succeeds(setup):
    setup.charge(setup.alice, "k1", 900)
    assert setup.charge(setup.alice, "k2", 100).remaining_units == 0


def test_refusal_records_only_an_audit_event(setup):
    setup.charge(setup.alice, "k1", 900)
    head = setup.ledger.head()
    with pytest.raises(BudgetExhausted):
        setup.charge(setup.alice, "k2", 500)
    assert setup.ledger.get_budget("alice", setup.dataset).spent_units == 900
    assert setup.ledger.lookup_release("k2", "alice") is None
    events = setup.ledger.list_events(after_seq=head.count)
    assert [(e.outcome, e.cost_units, e.release_id) for e in events] == [(Outcome.REFUSED, 0, None)]


def test_remaining_is_the_smaller_of_allocation_and_cap(setup):
    setup.ledger.admin.top_up_allocation("alice", setup.dataset, 20_000, request=setup.operator)
    setup.charge(setup.alice, "k1", 9_000)
    with pytest.raises(BudgetExhausted) as raised:
        setup.charge(setup.alice, "k2", 1_500)
    assert raised.value.remaining_units == 1_000


def test_cap_binds_across_requesters(setup):
    admin = setup.ledger.admin
    admin.set_dataset_cap(  # below the 2,000 allocated: over-subscribed on purpose
        setup.dataset, 1_500, reason="shrink for test", request=setup.operator, force=True
    )
    setup.charge(setup.alice, "k1", 1_000)
    with pytest.raises(BudgetExhausted) as raised:
        setup.charge(setup.bob, "k2", 600)
    assert raised.value.remaining_units == 500


def test_missing_allocation_counts_as_zero(setup):
    setup.ledger.admin.create_requester(
        "carol", name="Carol", organisation="c", agreement="a", request=setup.operator
    )
    with pytest.raises(BudgetExhausted) as raised:
        setup.ledger.debit(
            "carol",
            setup.dataset,
            "k",
            idempotency_key=None,
            cost_units=1,
            payload=b"",
            request=setup.request(None),
        )
    assert raised.value.remaining_units == 0


def test_expired_allocation_cannot_be_spent(setup):
    expiry = setup.clock.now + dt.timedelta(days=1)
    setup.ledger.admin.set_allocation_expiry("alice", setup.dataset, expiry, request=setup.operator)
    setup.charge(setup.alice, "k1", 10)
    setup.clock.advance(days=1)
    with pytest.raises(BudgetExhausted) as raised:
        setup.charge(setup.alice, "k2", 10)
    assert raised.value.remaining_units == 0


def test_idempotent_retry_replays_the_first_answer_charged_once(setup):
    first = setup.charge(setup.alice, "k1", 100, idempotency_key="i1", payload=b"first")
    again = setup.charge(setup.alice, "k1", 100, idempotency_key="i1", payload=b"second")
    assert again == first  # the release, and what the first call was told
    assert (again.charged_units, again.remaining_units, again.repeat) == (100, 900, False)
    assert again.release.payload == b"first"
    assert setup.ledger.get_budget("alice", setup.dataset).spent_units == 100


def test_a_retry_of_a_free_repeat_replays_the_repeat(setup):
    setup.charge(setup.alice, "k1", 100)
    served = setup.charge(setup.bob, "k1", 100, idempotency_key="b1")  # shared: free
    setup.charge(setup.bob, "k2", 300)
    again = setup.charge(setup.bob, "k1", 100, idempotency_key="b1")
    assert again == served
    assert (again.charged_units, again.remaining_units, again.repeat) == (0, 1_000, True)
    assert setup.ledger.get_budget("bob", setup.dataset).spent_units == 300


def test_a_key_recorded_before_first_answers_were_kept_replays_as_a_free_repeat(setup):
    first = setup.charge(setup.alice, "k1", 100, idempotency_key="old")
    setup.store.execute(  # as a ledger before schema 3 recorded it: no answer kept
        "UPDATE idempotency_keys SET first_charged_units = NULL,"
        " first_remaining_units = NULL, first_repeat = NULL"
    )
    again = setup.charge(setup.alice, "k1", 100, idempotency_key="old")
    assert again.release == first.release
    assert (again.charged_units, again.remaining_units, again.repeat) == (0, 900, True)
    assert setup.ledger.get_budget("alice", setup.dataset).spent_units == 100


def test_a_first_answer_is_kept_whole_or_not_at_all(setup):
    setup.charge(setup.alice, "k1", 100, idempotency_key="i1")
    with pytest.raises(setup.store.integrity_error):
        setup.store.execute("UPDATE idempotency_keys SET first_repeat = NULL")


def test_idempotency_key_reused_for_another_query_is_a_conflict(setup):
    setup.charge(setup.alice, "k1", 100, idempotency_key="i1")
    with pytest.raises(IdempotencyConflict):
        setup.charge(setup.alice, "k2", 100, idempotency_key="i1")
    assert setup.ledger.get_budget("alice", setup.dataset).spent_units == 100


def test_idempotency_keys_are_scoped_per_requester(setup):
    setup.charge(setup.alice, "k1", 100, idempotency_key="same")
    result = setup.charge(setup.bob, "k2", 100, idempotency_key="same")
    assert (result.repeat, result.release.requester_id) == (False, "bob")


def test_lookup_finds_a_release_before_computation(setup):
    assert setup.ledger.lookup_release("k1", "alice") is None
    created = setup.charge(setup.alice, "k1", 100)
    assert setup.ledger.lookup_release("k1", "alice") == created.release


def test_repeat_query_is_free(setup):
    created = setup.charge(setup.alice, "k1", 100)
    repeated = setup.charge(setup.alice, "k1", 100, payload=b"fresh noise")
    assert repeated.release == created.release
    assert (repeated.charged_units, repeated.repeat) == (0, True)
    assert setup.ledger.get_budget("alice", setup.dataset).spent_units == 100


def test_repeat_of_a_spent_budget_is_still_served(setup):
    setup.charge(setup.alice, "k1", 1_000)
    assert setup.charge(setup.alice, "k1", 1_000).repeat


def test_release_is_shared_with_another_requester_by_default(setup):
    created = setup.charge(setup.alice, "k1", 100)
    assert setup.ledger.lookup_release("k1", "bob") == created.release
    served = setup.charge(setup.bob, "k1", 100)
    assert (served.release, served.charged_units) == (created.release, 0)
    assert setup.ledger.get_budget("bob", setup.dataset).spent_units == 0


def test_unshared_dataset_charges_each_requester_for_their_own_release(setup):
    setup.ledger.admin.set_release_sharing(setup.dataset, False, request=setup.operator)
    created = setup.charge(setup.alice, "k1", 100)
    assert setup.ledger.lookup_release("k1", "bob") is None
    own = setup.charge(setup.bob, "k1", 100, payload=b"bob's")
    assert own.release.release_id != created.release.release_id
    assert (own.charged_units, own.release.payload) == (100, b"bob's")
    assert setup.ledger.lookup_release("k1", "bob") == own.release


@pytest.mark.parametrize("cost", [0, -5, 1.5, True])
def test_non_positive_or_non_integer_cost_is_rejected(setup, cost):
    with pytest.raises(InvalidAmount):
        setup.charge(setup.alice, "k1", cost)


def test_debit_on_unknown_dataset_is_refused_and_audited(setup):
    with pytest.raises(DatasetNotFoundError):
        setup.ledger.debit(
            "alice",
            "nope",
            "k",
            idempotency_key=None,
            cost_units=1,
            payload=b"",
            request=setup.request(setup.alice),
        )
    assert setup.ledger.list_events(after_seq=setup.ledger.head().count - 1)[0].outcome == (
        Outcome.INVALID
    )


def test_disabled_requester_cannot_spend(setup):
    setup.ledger.admin.set_requester_enabled("alice", False, request=setup.operator)
    with pytest.raises(RequesterDisabled):
        setup.charge(setup.alice, "k1", 1)


def test_charged_debit_writes_its_audit_event_in_the_same_transaction(setup):
    result = setup.charge(setup.alice, "k1", 42)
    last = setup.ledger.list_events(after_seq=setup.ledger.head().count - 1)[0]
    assert (last.outcome, last.cost_units, last.release_id, last.query_text) == (
        Outcome.ANSWERED,
        42,
        result.release.release_id,
        "query k1",
    )


def test_reconcile_finds_balances_equal_to_releases(setup):
    setup.charge(setup.alice, "k1", 42)
    setup.charge(setup.bob, "k2", 58)
    assert setup.ledger.reconcile().ok


def test_lookup_is_free_and_writes_nothing(setup):
    setup.charge(setup.alice, "k1", 100)
    head = setup.ledger.head()
    for _ in range(3):
        setup.ledger.lookup_release("k1", "bob")
        setup.ledger.lookup_release("missing", "bob")
    assert setup.ledger.head() == head
    assert setup.ledger.get_budget("bob", setup.dataset).spent_units == 0


def test_release_key_of_another_dataset_is_refused(setup):
    setup.ledger.admin.create_dataset(
        "other", accounting=Accounting.PURE_DP, cap_units=100, reason="t", request=setup.operator
    )
    setup.ledger.admin.grant_allocation(
        "alice", "other", 100, request=setup.operator, purpose="testing", agreement="DSA-TEST"
    )
    setup.charge(setup.alice, "k1", 10)
    with pytest.raises(ReleaseKeyConflict):
        setup.ledger.debit(
            "alice",
            "other",
            "k1",
            idempotency_key=None,
            cost_units=10,
            payload=b"",
            request=setup.request(setup.alice),
        )
    assert setup.ledger.get_dataset("other").spent_units == 0
