"""A retried RunQuery whose first answer was lost is told what the first attempt charged.

Through the real server and client, on both ledger backends: the first call's answer is
read off the raw stub and dropped (as a lost reply would be); the retry with the same
idempotency key, through the real client, reports the first attempt's charge, remaining
budget and release, and the budget was charged once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from pydantic import SecretStr

from dpgate import Client, count
from dpgate_proto.v1 import query_pb2, query_pb2_grpc
from dpgate_server.api.server import build_server
from dpgate_server.config import LedgerSettings
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import RequestInfo
from dpgate_server.store.store import DatasetVersion
from tests.support.analysts import new_analyst

from .conftest import ANALYST_EPSILON, Service, prepare_ledger, settings_for


@dataclass(frozen=True)
class Served:
    target: str
    token: str
    ledger: str
    """The ledger's location (SQLite file or postgresql:// URL)."""
    requester_id: str
    dataset_id: str


@pytest.fixture(params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest,
    service: Service,
    small_dataset: DatasetVersion,
    tmp_path: Path,
) -> Iterator[Served]:
    if request.param == "sqlite":  # the session's shared server, with an analyst of its own
        # (the shared analyst's budget is spent by whichever tests ran before this one)
        with Ledger.open(service.ledger_path) as ledger:
            requester_id, token = new_analyst(
                ledger,
                service.dataset_id,
                1,
                prefix="retrier",
                organisation="Test Trust",
                request=RequestInfo(request_id="test-setup", rpc="test-setup"),
            )
        yield Served(
            service.target, token, str(service.ledger_path), requester_id, service.dataset_id
        )
        return
    databases = request.getfixturevalue("postgres_ledger_databases")
    url = databases.take()
    settings = settings_for(small_dataset.path.parents[2], tmp_path, workers=1)
    settings = settings.model_copy(update={"ledger": LedgerSettings(url=SecretStr(url))})
    running = build_server(settings)
    try:
        codes = small_dataset.metadata.column("practice_code").values or ("A00000",)
        tokens = prepare_ledger(url, small_dataset.dataset_id, str(codes[0]))
        target = f"127.0.0.1:{running.port}"
        yield Served(target, tokens["analyst"], url, "analyst-1", small_dataset.dataset_id)
    finally:
        running.stop(grace_seconds=1)
        databases.give_back(url)


def _spent(served: Served) -> int:
    with Ledger.open(served.ledger) as ledger:
        return ledger.get_budget(served.requester_id, served.dataset_id).spent_units


def test_a_retry_whose_first_answer_was_lost_reports_the_first_charge(served: Served) -> None:
    query = count(served.dataset_id).by("mode").epsilon(Decimal("0.37"))
    key = uuid.uuid4().hex
    spent_before = _spent(served)
    metadata = (("authorization", f"Bearer {served.token}"),)
    with grpc.insecure_channel(served.target) as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        first_call = query_pb2.RunQueryRequest(query=query.to_proto(), idempotency_key=key)
        parts = list(stub.RunQuery(first_call, metadata=metadata, timeout=120))
    lost = parts[0].header  # the answer the client never saw
    assert (lost.charged.nano_units, lost.repeat) == (370_000_000, False)

    with Client(served.target, token=served.token, timeout=120) as client:
        retried = client.query(query, idempotency_key=key)
        [budget] = client.budget(served.dataset_id)
    assert retried.release_id == lost.release_id
    assert (retried.charged, retried.repeat) == (Decimal("0.37"), False)
    assert retried.remaining * 10**9 == lost.remaining.nano_units
    assert retried.remaining == budget.remaining  # nothing more was spent
    assert _spent(served) - spent_before == 370_000_000  # charged once
    if served.ledger.startswith("postgresql"):  # its own server: the budget is known
        assert budget.remaining == ANALYST_EPSILON - Decimal("0.37")
