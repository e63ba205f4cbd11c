"""Fixtures for ledger integration tests: a real SQLite file and the worker script."""

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
def make_ledger_file(tmp_path):
    """Create a ledger with requester "spender" holding `grant` on dataset "d" capped at `cap`."""

    def make(cap: int, grant: int) -> Path:
        path = tmp_path / "ledger.db"
        operator = RequestInfo(request_id="setup", rpc="Setup")
        with Ledger.open_sqlite(path) as ledger:
            ledger.admin.create_dataset(
                "d", accounting=Accounting.PURE_DP, cap_units=cap, reason="t", request=operator
            )
            for requester in ("spender", "other"):
                ledger.admin.create_requester(
                    requester, name=requester, organisation="o", agreement="a", request=operator
                )
            ledger.admin.grant_allocation("spender", "d", grant, request=operator)
            ledger.admin.grant_allocation("other", "d", grant, request=operator)
        return path

    return make
