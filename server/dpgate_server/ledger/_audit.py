"""Appending to the audit chain inside a storage transaction (shared by every writer).

Unauthenticated requests are not chained one by one (see `unauthenticated.py`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from dpgate_server.ledger.chain import event_hash
from dpgate_server.ledger.model import AuditEvent, Outcome, RequestInfo
from dpgate_server.ledger.storage import StorageTransaction


def append_event(
    tx: StorageTransaction,
    *,
    at: dt.datetime,
    request: RequestInfo,
    outcome: Outcome,
    dataset_id: str | None = None,
    cost_units: int = 0,
    release_id: str | None = None,
    detail: str = "",
    requester_id: str | None = None,
) -> AuditEvent:
    """Append one event after the current head and move the head to it."""
    head = tx.get_head()
    principal = request.principal
    unhashed = AuditEvent(
        seq=head.count + 1,
        at=at,
        requester_id=principal.requester_id if principal is not None else requester_id,
        token_id=principal.token_id if principal is not None else None,
        role=principal.role.value if principal is not None else None,
        rpc=request.rpc,
        query_text=request.query_text,
        dataset_id=dataset_id,
        cost_units=cost_units,
        outcome=outcome,
        release_id=release_id,
        request_id=request.request_id,
        detail=detail,
        prev_hash=head.hash,
        event_hash="",
    )
    event = _with_hash(unhashed)
    tx.append_event(event)
    return event


def _with_hash(event: AuditEvent) -> AuditEvent:
    return replace(event, event_hash=event_hash(event))
