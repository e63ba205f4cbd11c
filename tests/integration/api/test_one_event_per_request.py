"""Every query request leaves exactly one audit event, whatever its outcome.

The ledger records what it decides (a charge, a free repeat, a refusal, a key reused)
inside the transaction that decides it; the API layer records only what the ledger did
not see. A request recorded by both would count twice in every audit total.
"""

from __future__ import annotations

import uuid
from collections import Counter
from decimal import Decimal

import pytest

from dpgate import BudgetExhaustedError, Client, DpgateError, InvalidQueryError, count
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import AuditEvent, Outcome

from .conftest import Service
from .test_query_rpc import new_analyst


def _run_query_events_after(service: Service, seq: int) -> list[AuditEvent]:
    with Ledger.open_sqlite(service.ledger_path) as ledger:
        return [e for e in ledger.list_events(after_seq=seq, limit=10_000) if e.rpc == "RunQuery"]


def _head(service: Service) -> int:
    with Ledger.open_sqlite(service.ledger_path) as ledger:
        return ledger.head().count


def test_each_query_request_has_one_event(service: Service) -> None:
    token = new_analyst(service, epsilon=0.5)
    dataset = service.dataset_id
    # Spends no other test asks for: a query another test released would be a free repeat.
    tiny = Decimal(uuid.uuid4().int % 10_000) / 10**9
    start = _head(service)
    key = uuid.uuid4().hex
    with Client(service.target, token=token, timeout=120) as client:
        charged = count(dataset).by("region_code").epsilon(Decimal("0.2") + tiny)
        client.query(charged, idempotency_key=key)  # charged
        client.query(charged)  # a free repeat
        with pytest.raises(InvalidQueryError):  # the key again, for another query
            client.query(
                count(dataset).by("mode").epsilon(Decimal("0.1") + tiny), idempotency_key=key
            )
        with pytest.raises(BudgetExhaustedError):  # 0.3 remains
            client.query(count(dataset).by("sex").epsilon(Decimal("0.4") + tiny))
        with pytest.raises(DpgateError):  # not a column
            client.query(count(dataset).by("date_of_birth").epsilon(0.1))

    events = _run_query_events_after(service, start)
    per_request = Counter(e.request_id for e in events)
    assert sorted(per_request.values()) == [1] * 5, [(e.outcome, e.detail) for e in events]
    assert [e.outcome for e in events] == [
        Outcome.ANSWERED,
        Outcome.ANSWERED,
        Outcome.INVALID,
        Outcome.REFUSED,
        Outcome.INVALID,
    ]
    assert [e.cost_units for e in events][:2] == [200_000_000 + int(tiny * 10**9), 0]
    assert all(e.dataset_id == dataset for e in events[:4])
