"""Replicas for the failover tests: real servers (tests/support/replicas.py) on a fresh
database of the session's throwaway PostgreSQL cluster, each test its own group (tests
here kill replicas). Replicas started here log every RPC, so a test can see which
replica answered what."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from dpgate_server.ledger.model import Role
from tests.conftest import PostgresLedgerDatabases
from tests.support.replicas import SETUP, Replica, Replicas


@pytest.fixture
def ledger_url(
    postgres_ledger_databases: PostgresLedgerDatabases, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """An empty, migrated ledger database; replicas started in the test log every RPC."""
    monkeypatch.setenv("DPGATE_OPERATIONS__LOG_LEVEL", "INFO")
    url = postgres_ledger_databases.take()
    yield url
    postgres_ledger_databases.give_back(url)


def served(member: Replica, rpc: str) -> int:
    """How many calls of `rpc` the replica answered OK (from its log lines)."""
    return sum(f"{rpc} OK" in line for line in list(member.output))


def token_for(replicas: Replicas, role: Role) -> tuple[str, str]:
    """A new requester with one token of `role`: (requester id, token)."""
    requester_id = f"{role.value}-{uuid.uuid4().hex[:8]}"
    with replicas.ledger() as ledger:
        ledger.admin.create_requester(
            requester_id, name=role.value, organisation="Failover", agreement="DSA", request=SETUP
        )
        token = ledger.admin.issue_token(requester_id, role, request=SETUP).token
    return requester_id, token
