"""The demo's first start creates one working token per role, once."""

from __future__ import annotations

from pathlib import Path

from dpgate_server.demo_bootstrap import DEMO_ALLOCATION, DEMO_ALSO_ALLOCATION, bootstrap_demo
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import RequestInfo, Role
from dpgate_server.spend import to_units_floor
from dpgate_server.vocabulary.accounting import Accounting


def open_ledger(tmp_path: Path) -> Ledger:
    ledger = Ledger.open_sqlite(tmp_path / "ledger.sqlite")
    ledger.admin.create_dataset(
        "gp_appointments",
        accounting=Accounting.PURE_DP,
        cap_units=0,
        reason="registered",
        request=RequestInfo(request_id="t", rpc="t"),
    )
    return ledger


def test_first_start_issues_one_token_per_role(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as ledger:
        accounts = bootstrap_demo(ledger, "gp_appointments", "A81001")
        assert accounts is not None
        roles = {name: ledger.authenticate(token) for name, token in accounts.tokens.items()}
        assert {name: p.role for name, p in roles.items() if p} == {r.value: r for r in Role}
        provider = roles["provider"]
        assert provider is not None
        assert provider.practice_codes == frozenset({"A81001"})


def test_demo_analyst_can_spend_its_allocation(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as ledger:
        bootstrap_demo(ledger, "gp_appointments", "A81001")
        budget = ledger.get_budget("demo-analyst", "gp_appointments")
        assert budget.remaining_units == to_units_floor(DEMO_ALLOCATION)


def test_second_start_creates_nothing(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as ledger:
        assert bootstrap_demo(ledger, "gp_appointments", "A81001") is not None
        assert bootstrap_demo(ledger, "gp_appointments", "A81001") is None
        assert len(ledger.admin.list_requesters()) == len(Role)


def test_a_further_demo_dataset_gets_its_own_cap_and_grant(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as ledger:
        ledger.admin.create_dataset(
            "gp_appointments_zcdp",
            accounting=Accounting.ZCDP,
            cap_units=0,
            reason="registered",
            request=RequestInfo(request_id="t", rpc="t"),
        )
        bootstrap_demo(ledger, "gp_appointments", "A81001", ["gp_appointments_zcdp"])
        budget = ledger.get_budget("demo-analyst", "gp_appointments_zcdp")
        assert budget.remaining_units == to_units_floor(DEMO_ALSO_ALLOCATION)
        assert ledger.get_budget("demo-analyst", "gp_appointments").remaining_units == (
            to_units_floor(DEMO_ALLOCATION)
        )
