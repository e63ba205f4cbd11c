"""Property: any sequence of grants, debits, top-ups, reductions and cap changes keeps
spent <= allocation and <= cap, and every balance adds up to the releases behind it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from dpgate_server.ledger import (
    AllocationBelowSpent,
    BudgetExhausted,
    CapBelowAllocated,
    CapBelowSpent,
    IdempotencyConflict,
    RequestInfo,
)
from dpgate_server.vocabulary.accounting import Accounting

pytestmark = pytest.mark.slow  # long: started first on parallel runs


REQUESTERS = ("r0", "r1", "r2")
DATASET = "d"
OPERATOR = RequestInfo(request_id="op", rpc="Admin")

requesters = st.sampled_from(REQUESTERS)
amounts = st.integers(min_value=1, max_value=400)
keys = st.sampled_from([f"key{i}" for i in range(8)])
idempotency_keys = st.none() | st.sampled_from(["i0", "i1", "i2"])


class BudgetMachine(RuleBasedStateMachine):
    """Drives a real ledger (SQLite or PostgreSQL) and a plain-integer model side by side."""

    new_store: Callable[[], Any]
    """Makes a fresh `LedgerStore` (set per backend by the test below)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
        self.store = self.new_store()
        self.ledger = self.store.open(clock=lambda: self.now)
        self.cap = 1_000
        self.ledger.admin.create_dataset(
            DATASET, accounting=Accounting.PURE_DP, cap_units=self.cap, reason="t", request=OPERATOR
        )
        for requester in REQUESTERS:
            self.ledger.admin.create_requester(
                requester, name=requester, organisation="o", agreement="a", request=OPERATOR
            )
        self.granted: dict[str, int] = {}
        self.spent: dict[str, int] = dict.fromkeys(REQUESTERS, 0)
        self.expired: set[str] = set()
        self.released: dict[str, int] = {}  # release key -> cost
        self.idempotency: dict[tuple[str, str], tuple[str, tuple[int, int, bool]]] = {}
        """(requester, key) -> (release key, what the first call was told)."""

    def teardown(self) -> None:
        self.ledger.close()
        self.store.done()

    def remaining(self, requester: str) -> int:
        if requester not in self.granted or requester in self.expired:
            allocation = 0
        else:
            allocation = self.granted[requester] - self.spent[requester]
        return min(allocation, self.cap - sum(self.spent.values()))

    @rule(requester=requesters, units=st.integers(min_value=0, max_value=800))
    def grant(self, requester: str, units: int) -> None:
        if requester in self.granted:
            return
        self.ledger.admin.grant_allocation(
            requester, DATASET, units, request=OPERATOR, purpose="testing", agreement="DSA-TEST"
        )
        self.granted[requester] = units

    @precondition(lambda self: bool(self.granted))
    @rule(data=st.data(), units=amounts)
    def top_up(self, data: st.DataObject, units: int) -> None:
        requester = data.draw(st.sampled_from(sorted(self.granted)))
        self.ledger.admin.top_up_allocation(requester, DATASET, units, request=OPERATOR)
        self.granted[requester] += units

    @precondition(lambda self: bool(self.granted))
    @rule(data=st.data(), units=amounts)
    def reduce(self, data: st.DataObject, units: int) -> None:
        requester = data.draw(st.sampled_from(sorted(self.granted)))
        if self.granted[requester] - units < self.spent[requester]:
            with pytest.raises(AllocationBelowSpent):
                self.ledger.admin.reduce_allocation(requester, DATASET, units, request=OPERATOR)
            return
        self.ledger.admin.reduce_allocation(requester, DATASET, units, request=OPERATOR)
        self.granted[requester] -= units

    @rule(units=st.integers(min_value=0, max_value=3_000))
    def set_cap(self, units: int) -> None:
        if units < sum(self.spent.values()):
            with pytest.raises(CapBelowSpent):
                self.ledger.admin.set_dataset_cap(DATASET, units, reason="r", request=OPERATOR)
            return
        if units < sum(self.granted.values()):
            with pytest.raises(CapBelowAllocated):
                self.ledger.admin.set_dataset_cap(DATASET, units, reason="r", request=OPERATOR)
        self.ledger.admin.set_dataset_cap(DATASET, units, reason="r", request=OPERATOR, force=True)
        self.cap = units

    @precondition(lambda self: bool(self.granted))
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        requester = data.draw(st.sampled_from(sorted(self.granted)))
        soon = self.now + dt.timedelta(seconds=1)  # an expiry must lie in the future
        self.ledger.admin.set_allocation_expiry(requester, DATASET, soon, request=OPERATOR)
        self.now = soon
        self.expired.add(requester)

    @rule(requester=requesters, key=keys, idempotency_key=idempotency_keys, cost=amounts)
    def debit(self, requester: str, key: str, idempotency_key: str | None, cost: int) -> None:
        def run():  # type: ignore[no-untyped-def]
            return self.ledger.debit(
                requester,
                DATASET,
                key,
                idempotency_key=idempotency_key,
                cost_units=cost,
                payload=key.encode(),
                request=RequestInfo("q", "RunQuery", key),
            )

        earlier = self.idempotency.get((requester, idempotency_key or ""))
        if idempotency_key is not None and earlier is not None:
            if earlier[0] != key:
                with pytest.raises(IdempotencyConflict):
                    run()
                return
            result = run()  # a retry: the first answer again, charged nothing more
            told = (result.charged_units, result.remaining_units, result.repeat)
            assert (told, result.release.payload) == (earlier[1], key.encode())
            return
        if key in self.released:
            result = run()
            assert (result.repeat, result.charged_units, result.release.payload) == (
                True,
                0,
                key.encode(),
            )
            assert result.remaining_units == max(0, self.remaining(requester))
        elif cost > self.remaining(requester):
            expected_remaining = max(0, self.remaining(requester))
            with pytest.raises(BudgetExhausted) as refused:
                run()
            assert refused.value.requested_units == cost
            assert refused.value.remaining_units == expected_remaining
            return
        else:
            result = run()
            assert (result.repeat, result.charged_units) == (False, cost)
            self.spent[requester] += cost
            self.released[key] = cost
            assert result.remaining_units == self.remaining(requester)
        if idempotency_key is not None:
            told = (result.charged_units, result.remaining_units, result.repeat)
            self.idempotency[(requester, idempotency_key)] = (key, told)

    @invariant()
    def balances_match_the_model_and_the_limits(self) -> None:
        dataset = self.ledger.get_dataset(DATASET)
        assert dataset.cap_units == self.cap
        assert dataset.spent_units == sum(self.spent.values()) <= self.cap
        for requester in REQUESTERS:
            budget = self.ledger.get_budget(requester, DATASET)
            assert budget.spent_units == self.spent[requester]
            assert budget.spent_units <= budget.granted_units or requester not in self.granted
            assert budget.remaining_units == max(0, self.remaining(requester))

    @invariant()
    def balances_add_up_to_the_releases(self) -> None:
        assert self.ledger.reconcile().ok
        releases = self.ledger.list_releases()
        assert sum(r.cost_units for r in releases) == sum(self.spent.values())
        assert len(releases) == len(self.released)


def test_any_sequence_keeps_spent_within_allocation_and_cap(ledger_store_factory):
    machine = type(
        "BudgetMachineOnBackend",
        (BudgetMachine,),
        {"new_store": staticmethod(ledger_store_factory)},
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
