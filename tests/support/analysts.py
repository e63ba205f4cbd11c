"""Setting up analysts directly in a test's ledger (not through the API under test)."""

from __future__ import annotations

import uuid

from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import RequestInfo, Role
from dpgate_server.spend import to_units_floor


def new_analyst(
    ledger: Ledger,
    dataset_id: str,
    epsilon: float,
    *,
    prefix: str,
    organisation: str,
    request: RequestInfo,
) -> tuple[str, str]:
    """A new analyst holding `epsilon` on `dataset_id`: (requester id, token)."""
    requester_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ledger.admin.create_requester(
        requester_id, name=prefix, organisation=organisation, agreement="DSA", request=request
    )
    if epsilon > 0:
        ledger.admin.grant_allocation(
            requester_id,
            dataset_id,
            to_units_floor(epsilon),
            request=request,
            purpose="testing",
            agreement="DSA-TEST",
        )
    token = ledger.admin.issue_token(requester_id, Role.ANALYST, request=request).token
    return requester_id, token


def extra_tokens(
    ledger: Ledger, requester_id: str, how_many: int, *, request: RequestInfo
) -> list[str]:
    """More analyst tokens for the same requester (one allocation)."""
    return [
        ledger.admin.issue_token(requester_id, Role.ANALYST, request=request).token
        for _ in range(how_many)
    ]
