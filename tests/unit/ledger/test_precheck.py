"""The pre-check before computing: the same rule as debit, settling what needs no answer."""

from __future__ import annotations

import pytest

from dpgate_server.ledger import BudgetExhausted, IdempotencyConflict, Outcome, RequestInfo


def _precheck(setup, principal, key, cost, *, idempotency_key=None):
    return setup.ledger.precheck_debit(
        principal.requester_id,
        setup.dataset,
        key,
        idempotency_key=idempotency_key,
        cost_units=cost,
        request=setup.request(principal, text=f"query {key}"),
    )


def _events_after(setup, count):
    return setup.ledger.list_events(after_seq=count)


def test_a_spend_that_fits_is_left_to_debit_and_writes_nothing(setup):
    head = setup.ledger.head()
    assert _precheck(setup, setup.alice, "k1", 1_000) is None
    assert setup.ledger.head() == head
    assert setup.ledger.get_budget("alice", setup.dataset).spent_units == 0


def test_a_spend_the_budget_cannot_pay_is_refused_once_and_marked_audited(setup):
    setup.charge(setup.alice, "k1", 900)
    head = setup.ledger.head().count
    with pytest.raises(BudgetExhausted) as refused:
        _precheck(setup, setup.alice, "k2", 101)
    assert (refused.value.requested_units, refused.value.remaining_units) == (101, 100)
    assert refused.value.audited
    [event] = _events_after(setup, head)
    assert (event.outcome, event.dataset_id, event.requester_id) == (
        Outcome.REFUSED,
        setup.dataset,
        "alice",
    )
    assert "remains" in event.detail


def test_a_released_query_is_served_free_with_one_event(setup):
    first = setup.charge(setup.alice, "k1", 300)
    head = setup.ledger.head().count
    served = _precheck(setup, setup.bob, "k1", 300)  # shared with bob (the default)
    assert served is not None
    assert (served.release, served.charged_units, served.repeat) == (first.release, 0, True)
    assert served.remaining_units == 1_000
    [event] = _events_after(setup, head)
    assert (event.outcome, event.release_id, event.cost_units) == (
        Outcome.ANSWERED,
        first.release.release_id,
        0,
    )


def test_a_repeat_is_served_even_when_the_budget_could_not_pay_again(setup):
    setup.charge(setup.alice, "k1", 1_000)
    served = _precheck(setup, setup.alice, "k1", 1_000)
    assert served is not None
    assert served.repeat


def test_a_reused_idempotency_key_is_refused_before_anything_is_computed(setup):
    setup.charge(setup.alice, "k1", 10, idempotency_key="retry-1")
    head = setup.ledger.head().count
    with pytest.raises(IdempotencyConflict) as refused:
        _precheck(setup, setup.alice, "k2", 10, idempotency_key="retry-1")
    assert refused.value.audited
    assert [e.outcome for e in _events_after(setup, head)] == [Outcome.INVALID]


def test_a_retry_with_its_key_is_the_first_release_and_the_first_answer(setup):
    first = setup.charge(setup.alice, "k1", 10, idempotency_key="retry-1")
    setup.charge(setup.alice, "k2", 40)  # spent meanwhile: the replay keeps the old figure
    head = setup.ledger.head().count
    served = _precheck(setup, setup.alice, "k1", 10, idempotency_key="retry-1")
    assert served == first
    [event] = _events_after(setup, head)
    assert (event.outcome, event.cost_units, event.detail) == (
        Outcome.ANSWERED,
        0,
        "idempotent retry",
    )
    assert setup.ledger.get_budget("alice", setup.dataset).spent_units == 50


def test_debit_refusals_are_marked_audited_too(setup):
    setup.charge(setup.alice, "k1", 900)
    with pytest.raises(BudgetExhausted) as refused:
        setup.charge(setup.alice, "k2", 101)
    assert refused.value.audited


def test_another_requesters_principal_is_refused(setup):
    request = RequestInfo(request_id="r", rpc="RunQuery", principal=setup.bob)
    with pytest.raises(ValueError, match="principal"):
        setup.ledger.precheck_debit(
            "alice", setup.dataset, "k1", idempotency_key=None, cost_units=1, request=request
        )


def test_a_retry_asking_the_same_question_of_a_newer_version_is_its_first_release(setup):
    first = setup.charge(setup.alice, "k-v1", 10, idempotency_key="retry-1")
    seen = []

    def same_question(earlier):
        seen.append(earlier.release_id)
        return True

    served = setup.ledger.precheck_debit(
        "alice",
        setup.dataset,
        "k-v2",
        idempotency_key="retry-1",
        cost_units=10,
        request=setup.request(setup.alice),
        same_question=same_question,
    )
    assert served == first  # replayed as first answered: charged 10, not a repeat
    assert setup.ledger.get_budget("alice", setup.dataset).spent_units == 10
    assert set(seen) == {first.release.release_id}  # asked in the snapshot, then under the lock


def test_a_retry_the_caller_says_is_another_question_is_a_conflict(setup):
    setup.charge(setup.alice, "k-v1", 10, idempotency_key="retry-1")
    with pytest.raises(IdempotencyConflict):
        setup.ledger.precheck_debit(
            "alice",
            setup.dataset,
            "k-v2",
            idempotency_key="retry-1",
            cost_units=10,
            request=setup.request(setup.alice),
            same_question=lambda earlier: False,
        )
