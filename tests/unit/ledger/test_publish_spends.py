"""Publish spends: a publish-time release (the bias figure) charged to the dataset's cap.

Runs on both backends (`setup`). The cap pays, never an allocation; the spend is recorded,
audited and listed in the transparency report; a version spends at most as often as the
setting allows; a cap too small refuses with nothing charged; reconcile counts it.
"""

from __future__ import annotations

import pytest

from dpgate_server.ledger import Outcome, RequestInfo
from dpgate_server.ledger.errors import CapBelowAllocated

PUBLISH = RequestInfo(
    request_id="pub-1", rpc="PublishDatasetVersion", query_text="publish gp_appointments"
)


def test_a_publish_spend_is_charged_to_the_cap_recorded_and_audited(setup):
    ledger, dataset = setup.ledger, setup.dataset
    head = ledger.head().count
    charge = ledger.charge_publish_spend(dataset, "v000002", "bias_figure", 300, PUBLISH)
    assert charge.charged
    assert charge.remaining_units == setup.cap - 300
    assert ledger.get_dataset(dataset).spent_units == 300
    assert ledger.get_budget("alice", dataset).spent_units == 0  # no allocation pays
    (spend,) = ledger.publish_spends(dataset)
    assert spend == charge.spend
    assert (spend.dataset_version, spend.purpose, spend.cost_units) == (
        "v000002",
        "bias_figure",
        300,
    )
    (event,) = ledger.list_events(head)
    assert (event.outcome, event.cost_units, event.release_id) == (
        Outcome.ANSWERED,
        300,
        spend.spend_id,
    )
    assert "bias_figure of gp_appointments v000002" in event.detail
    assert ledger.reconcile().ok
    assert ledger.verify().ok
    (entry,) = ledger.transparency_report().entries
    assert (entry.spend_units, entry.cumulative_dataset_units) == (300, 300)
    assert entry.query_text == "publish spend: bias_figure of gp_appointments v000002"


def test_a_version_spends_once_by_default_and_a_second_is_refused_free(setup):
    ledger, dataset = setup.ledger, setup.dataset
    assert ledger.charge_publish_spend(dataset, "v000002", "bias_figure", 300, PUBLISH).charged
    again = ledger.charge_publish_spend(dataset, "v000002", "bias_figure", 300, PUBLISH)
    assert not again.charged
    assert "the most the setting allows per version" in again.refusal
    assert ledger.get_dataset(dataset).spent_units == 300
    assert len(ledger.publish_spends(dataset, "v000002")) == 1
    # another purpose, another version: each its own count
    assert ledger.charge_publish_spend(dataset, "v000002", "chosen_bounds", 10, PUBLISH).charged
    assert ledger.charge_publish_spend(dataset, "v000003", "bias_figure", 10, PUBLISH).charged
    # a limit of two lets the version spend once more
    twice = ledger.charge_publish_spend(
        dataset, "v000002", "bias_figure", 5, PUBLISH, max_per_version=2
    )
    assert twice.charged
    assert ledger.get_dataset(dataset).spent_units == 325
    assert ledger.reconcile().ok


def test_a_cap_too_small_refuses_with_nothing_charged_and_says_why(setup):
    ledger, dataset = setup.ledger, setup.dataset
    setup.charge(setup.alice, "k1", 1_000)
    ledger.admin.set_dataset_cap(dataset, 1_100, reason="tight", request=setup.operator, force=True)
    head = ledger.head().count
    refused = ledger.charge_publish_spend(dataset, "v000002", "bias_figure", 300, PUBLISH)
    assert not refused.charged
    assert refused.remaining_units == 100
    assert "has epsilon 0.0000001 left" in refused.refusal
    assert ledger.get_dataset(dataset).spent_units == 1_000
    assert ledger.publish_spends(dataset) == []
    (event,) = ledger.list_events(head)
    assert (event.outcome, event.cost_units) == (Outcome.REFUSED, 0)
    assert "nothing charged" in event.detail
    assert ledger.reconcile().ok


def test_a_cap_must_fund_the_allocations_beside_what_publishing_spent(setup):
    """Publish spends come out of the cap too: a cap below the allocations plus them leaves
    allocations that can never be spent, so it needs `force` like a cap below the
    allocations alone. A requester's release is already inside their allocation and is not
    counted twice."""
    ledger, admin, dataset = setup.ledger, setup.ledger.admin, setup.dataset
    assert ledger.charge_publish_spend(dataset, "v000002", "bias_figure", 300, PUBLISH).charged
    setup.charge(setup.alice, "k1", 100)
    before = ledger.head()
    with pytest.raises(CapBelowAllocated) as refused:
        admin.set_dataset_cap(dataset, 2_299, reason="tighter", request=setup.operator)
    message = str(refused.value)
    assert "add up to epsilon 0.000002" in message
    assert "publishing has spent epsilon 0.0000003" in message
    assert "at least epsilon 0.0000023" in message
    assert ledger.head() == before
    admin.set_dataset_cap(dataset, 2_300, reason="exactly", request=setup.operator)
    admin.set_dataset_cap(dataset, 2_100, reason="on purpose", request=setup.operator, force=True)
    assert ledger.get_dataset(dataset).cap_units == 2_100
    [event] = ledger.list_events(after_seq=ledger.head().count - 1)
    assert (
        "(forced below epsilon 0.000002 allocated and epsilon 0.0000003 spent by publishing)"
        in (event.detail)
    )
    assert ledger.reconcile().ok


def test_the_spending_report_shows_what_publishing_spent_from_each_cap(setup):
    ledger, dataset = setup.ledger, setup.dataset
    assert ledger.charge_publish_spend(dataset, "v000002", "bias_figure", 300, PUBLISH).charged
    assert ledger.charge_publish_spend(dataset, "v000003", "bound_choice", 200, PUBLISH).charged
    setup.charge(setup.alice, "k1", 100)
    (totals,) = ledger.admin.spending_report().datasets
    assert (totals.spent_units, totals.publish_spent_units, totals.allocated_units) == (
        600,
        500,
        2_000,
    )
