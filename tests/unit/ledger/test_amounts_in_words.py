"""People read amounts as "epsilon 0.0000009", never as the ledger's integer units.

The ledger counts in integers of 1e-9; refusals, audit details and errors it writes for
people state the dataset's measure and an exact decimal instead.
"""

from __future__ import annotations

import re

import pytest

from dpgate_server.ledger import AllocationBelowSpent, BudgetExhausted, CapBelowSpent
from dpgate_server.vocabulary.accounting import Accounting

RAW_UNITS = re.compile(r"\bunits?\b|(?<![\w.])\d{3,}(?![\w.])")
"""The word "units", or a bare integer like the ledger's (the fixture's are >= 100)."""


def _details_since(setup, seq: int) -> list[str]:
    return [e.detail for e in setup.ledger.list_events(after_seq=seq)]


def test_a_refused_debit_says_epsilon_in_its_message_and_its_audit_event(setup):
    setup.charge(setup.alice, "k1", 900)
    head = setup.ledger.head()
    with pytest.raises(BudgetExhausted) as refused:
        setup.charge(setup.alice, "k2", 101)
    assert str(refused.value) == (
        "budget exhausted: the query costs epsilon 0.000000101 but only epsilon 0.0000001 remains"
    )
    assert refused.value.accounting == Accounting.PURE_DP
    [detail] = _details_since(setup, head.count)
    assert detail == "requested epsilon 0.000000101; epsilon 0.0000001 remains"


def test_admin_changes_are_audited_in_epsilon(setup):
    admin, op, ds = setup.ledger.admin, setup.operator, setup.dataset
    head = setup.ledger.head()
    admin.create_requester("carol", name="C", organisation="o", agreement="a", request=op)
    admin.grant_allocation(
        "carol", ds, 1_500_000_000, request=op, purpose="planning", agreement="DSA-1"
    )
    admin.top_up_allocation("carol", ds, 250_000_000, request=op)
    admin.reduce_allocation("carol", ds, 750_000_000, request=op)
    admin.set_dataset_cap(ds, 20_000_000_000, reason="new DSA", request=op)
    admin.create_dataset(
        "other", accounting=Accounting.ZCDP, cap_units=500_000_000, reason="r", request=op
    )
    details = _details_since(setup, head.count)[1:]
    assert details == [
        "grant epsilon 1.5 on gp_appointments to carol expires None"
        " purpose 'planning' agreement 'DSA-1'",
        "top up carol on gp_appointments by epsilon 0.25 to epsilon 1.75",
        "reduce carol on gp_appointments by epsilon 0.75 to epsilon 1",
        "set cap of gp_appointments from epsilon 0.00001 to epsilon 20: new DSA",
        "create dataset other cap rho 0.5: r",
    ]


def test_refused_admin_changes_say_epsilon(setup):
    setup.charge(setup.alice, "k1", 900)
    with pytest.raises(AllocationBelowSpent) as below:
        setup.ledger.admin.reduce_allocation("alice", setup.dataset, 500, request=setup.operator)
    with pytest.raises(CapBelowSpent) as cap:
        setup.ledger.admin.set_dataset_cap(setup.dataset, 100, reason="r", request=setup.operator)
    for refusal in (below.value, cap.value):
        assert "epsilon 0.0000009" in str(refusal)
        assert not RAW_UNITS.search(str(refusal)), str(refusal)


def test_reconciliation_problems_say_epsilon(setup):
    setup.store.execute("UPDATE allocations SET spent_units = 5 WHERE requester_id = 'alice'")
    problems = setup.ledger.reconcile().problems
    assert problems == (
        "('alice', 'gp_appointments'): allocation spent epsilon 0.000000005 != releases epsilon 0",
        "gp_appointments: dataset spent epsilon 0 != epsilon 0.000000005",
    )
