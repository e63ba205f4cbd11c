"""A question set's one debit: every member charged and recorded, or none (both backends)."""

from __future__ import annotations

import pytest

from dpgate_server.ledger import BudgetExhausted, Outcome
from dpgate_server.ledger.ledger import SetMember


def member(setup, key: str, cost: int, idempotency_key: str | None = None) -> SetMember:
    return SetMember(
        dataset_id=setup.dataset,
        release_key=key,
        idempotency_key=idempotency_key,
        cost_units=cost,
        payload=f"answer {key}".encode(),
        query_text=f"query {key}",
    )


def debit_set(setup, *members: SetMember):
    return setup.ledger.debit_set("alice", list(members), setup.request(setup.alice))


def test_a_set_charges_the_sum_and_records_every_member(setup):
    results = debit_set(setup, member(setup, "a", 300), member(setup, "b", 200))
    assert [r.charged_units for r in results] == [300, 200]
    assert [r.remaining_units for r in results] == [700, 500]
    assert setup.ledger.get_budget("alice", setup.dataset).spent_units == 500
    assert setup.ledger.get_dataset(setup.dataset).spent_units == 500
    stored = {r.release_key for r in setup.ledger.list_releases("alice")}
    assert stored == {"a", "b"}
    assert setup.ledger.reconcile().ok


def test_a_set_the_budget_cannot_pay_in_sum_charges_and_records_nothing(setup):
    head = setup.ledger.head()
    with pytest.raises(BudgetExhausted) as refused:  # each fits alone, the sum does not
        debit_set(setup, member(setup, "a", 600), member(setup, "b", 300), member(setup, "c", 200))
    assert (refused.value.requested_units, refused.value.remaining_units) == (1_100, 1_000)
    assert "question set member 2" in refused.value.message
    assert refused.value.audited
    assert setup.ledger.get_budget("alice", setup.dataset).spent_units == 0
    assert setup.ledger.list_releases("alice") == []
    [event] = setup.ledger.list_events(after_seq=head.count)
    assert event.outcome is Outcome.REFUSED
    assert "nothing released or charged" in event.detail


def test_a_member_released_before_is_a_free_repeat_in_the_set(setup):
    earlier = setup.charge(setup.alice, "a", 300)
    results = debit_set(setup, member(setup, "a", 300), member(setup, "b", 200))
    assert results[0].repeat
    assert results[0].charged_units == 0
    assert results[0].release.release_id == earlier.release.release_id
    assert setup.ledger.get_budget("alice", setup.dataset).spent_units == 500


def test_a_retried_set_replays_each_member_first_answer(setup):
    members = [member(setup, "a", 300, "set#0"), member(setup, "b", 200, "set#1")]
    first = debit_set(setup, *members)
    again = debit_set(setup, *members)
    assert [r.release.release_id for r in again] == [r.release.release_id for r in first]
    assert [r.charged_units for r in again] == [300, 200]  # as the first call was told
    assert setup.ledger.get_budget("alice", setup.dataset).spent_units == 500


def test_set_members_record_the_version_they_were_computed_on(setup):
    on_version = SetMember(
        dataset_id=setup.dataset,
        release_key="v",
        idempotency_key=None,
        cost_units=100,
        payload=b"answer v",
        query_text="query v",
        dataset_version="v000003",
    )
    (result,) = debit_set(setup, on_version)
    assert setup.ledger.get_release(result.release.release_id).dataset_version == "v000003"
    found = setup.ledger.derivation_sources("alice", setup.dataset, "v000003")
    assert [s.release_key for s in found] == ["v"]
    assert setup.ledger.derivation_sources("alice", setup.dataset, "v000004") == []
