"""Fixtures for ledger integration tests: a real ledger store and the worker script.

Each test runs on SQLite (a file) and on PostgreSQL (a database in the session's throwaway
cluster): `make_ledger_file` returns the store's location, a path or a URL.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from dpgate_server.ledger import Ledger, RequestInfo
from dpgate_server.vocabulary.accounting import Accounting

WORKER = Path(__file__).with_name("ledger_worker.py")


def _scale(small: int, full: int) -> int:
    """DPGATE_FULL_RUN=1 scales the bounded tests up for adversarial runs."""
    return full if os.environ.get("DPGATE_FULL_RUN") == "1" else small


@pytest.fixture
def full_run_scale():
    return _scale


@pytest.fixture
def worker_command():
    def command(*args: object) -> list[str]:
        return [sys.executable, str(WORKER), *(str(a) for a in args)]

    return command


@pytest.fixture
def make_ledger_file(ledger_store):
    """Create a ledger with requester "spender" holding `grant` on dataset "d" capped at `cap`.

    Returns where it is (what `Ledger.open` and the worker take).
    """

    def make(cap: int, grant: int) -> str:
        operator = RequestInfo(request_id="setup", rpc="Setup")
        with Ledger.open(ledger_store.location) as ledger:
            ledger.admin.create_dataset(
                "d", accounting=Accounting.PURE_DP, cap_units=cap, reason="t", request=operator
            )
            for requester in ("spender", "other"):
                ledger.admin.create_requester(
                    requester, name=requester, organisation="o", agreement="a", request=operator
                )
            ledger.admin.grant_allocation(
                "spender", "d", grant, request=operator, purpose="testing", agreement="DSA-TEST"
            )
            ledger.admin.grant_allocation(
                "other", "d", grant, request=operator, purpose="testing", agreement="DSA-TEST"
            )
        return ledger_store.location

    return make
