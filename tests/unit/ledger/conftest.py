"""Fixtures for the ledger's unit tests: a fresh ledger with a controllable clock.

Every test using `setup` runs twice: on SQLite and on PostgreSQL (`ledger_store`, in the
root conftest).

Helpers live on the `LedgerSetup` fixture value (test modules cannot import conftest
under --import-mode=importlib).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from dpgate_server.ledger import DebitResult, Ledger, Principal, RequestInfo, Role
from dpgate_server.vocabulary.accounting import Accounting


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = dt.datetime(2025, 1, 6, 9, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += dt.timedelta(**kwargs)


@dataclass(frozen=True)
class LedgerSetup:
    """A ledger with one dataset (cap 10,000 units) and two analysts granted 1,000 each."""

    ledger: Ledger
    clock: FakeClock
    store: Any
    """The `LedgerStore` (root conftest): its location and raw SQL access."""
    alice: Principal
    bob: Principal
    alice_token: str
    bob_token: str
    dataset: str = "gp_appointments"
    cap: int = 10_000
    grant: int = 1_000

    @property
    def operator(self) -> RequestInfo:
        """A local operator's request (no principal), as the CLI would make."""
        return RequestInfo(request_id="setup", rpc="Setup")

    def request(self, principal: Principal | None, text: str = "COUNT") -> RequestInfo:
        return RequestInfo(request_id="req", rpc="RunQuery", query_text=text, principal=principal)

    def charge(
        self,
        principal: Principal,
        key: str,
        cost: int,
        *,
        idempotency_key: str | None = None,
        payload: bytes = b"answer",
        dataset_version: str | None = None,
    ) -> DebitResult:
        return self.ledger.debit(
            principal.requester_id,
            self.dataset,
            key,
            idempotency_key=idempotency_key,
            cost_units=cost,
            payload=payload,
            request=self.request(principal, text=f"query {key}"),
            dataset_version=dataset_version,
        )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def setup(ledger_store: Any, clock: FakeClock) -> Iterator[LedgerSetup]:
    ledger = ledger_store.open(clock=clock)
    operator = RequestInfo(request_id="setup", rpc="Setup")
    admin = ledger.admin
    admin.create_dataset(
        "gp_appointments",
        accounting=Accounting.PURE_DP,
        cap_units=10_000,
        reason="initial",
        request=operator,
    )
    principals = []
    tokens = []
    for name in ("alice", "bob"):
        admin.create_requester(
            name, name=name.title(), organisation=f"{name} org", agreement="DSA-1", request=operator
        )
        admin.grant_allocation(
            name,
            "gp_appointments",
            1_000,
            request=operator,
            purpose="testing",
            agreement="DSA-TEST",
        )
        issued = admin.issue_token(name, Role.ANALYST, request=operator)
        principal = ledger.authenticate(issued.token)
        assert principal is not None
        principals.append(principal)
        tokens.append(issued.token)
    yield LedgerSetup(
        ledger, clock, ledger_store, principals[0], principals[1], tokens[0], tokens[1]
    )
    ledger.close()
