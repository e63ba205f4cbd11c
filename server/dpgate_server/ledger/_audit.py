"""Appending to the audit chain inside a storage transaction (shared by every writer).

Unauthenticated requests are not chained one by one: a flood of them would otherwise
fill the disk. They are counted per (source, one-minute window) in a small table; when a
window has closed, its count becomes one chain event ("N unauthenticated requests from
SOURCE"). Beyond `max_sources` distinct sources in one window, further sources are
counted together under `OTHER_SOURCES`. The chain therefore grows by at most
`max_sources + 1` events per minute however hard it is hammered, and the pending table
holds at most that many rows per open window.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from dpgate_server.ledger._time import format_time
from dpgate_server.ledger.chain import event_hash
from dpgate_server.ledger.model import AuditEvent, Outcome, RequestInfo
from dpgate_server.ledger.storage import StorageTransaction

OTHER_SOURCES = "(other sources)"
"""The source under which sources past the per-window limit are counted together."""

UNAUTHENTICATED_RPC = "(unauthenticated)"
"""The `rpc` of an aggregated unauthenticated-requests event."""


@dataclass(frozen=True, slots=True)
class UnauthenticatedPolicy:
    """How unauthenticated requests are aggregated.

    Attributes:
        window: the length of one counting window (default one minute).
        max_sources: distinct sources counted separately per window.
    """

    window: dt.timedelta = dt.timedelta(minutes=1)
    max_sources: int = 16

    def window_start(self, moment: dt.datetime) -> dt.datetime:
        """The start of the window holding `moment` (windows are aligned to the epoch)."""
        epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        windows = (moment - epoch) // self.window
        return epoch + windows * self.window


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


def count_unauthenticated(
    tx: StorageTransaction,
    *,
    at: dt.datetime,
    request: RequestInfo,
    policy: UnauthenticatedPolicy,
) -> None:
    """Count one unauthenticated request (after flushing closed windows)."""
    flush_unauthenticated(tx, at=at, policy=policy)
    window = policy.window_start(at)
    source = request.source or "(unknown)"
    if tx.increment_unauthenticated(source, window, at):
        return
    if tx.count_unauthenticated_sources(window) >= policy.max_sources:
        source = OTHER_SOURCES
        if tx.increment_unauthenticated(source, window, at):
            return
    tx.insert_unauthenticated(source, window, request.rpc, request.request_id, at)


def flush_unauthenticated(
    tx: StorageTransaction, *, at: dt.datetime, policy: UnauthenticatedPolicy
) -> int:
    """Turn every closed window's counters into chain events; returns how many."""
    current = policy.window_start(at)
    flushed = 0
    for pending in tx.list_pending_unauthenticated():
        if pending.window_start >= current:
            continue
        end = pending.window_start + policy.window
        append_event(
            tx,
            at=at,
            request=RequestInfo(
                request_id=pending.first_request_id, rpc=UNAUTHENTICATED_RPC, source=pending.source
            ),
            outcome=Outcome.UNAUTHENTICATED,
            detail=(
                f"{pending.count} unauthenticated request(s) from {pending.source} between "
                f"{format_time(pending.window_start)} and {format_time(end)}; "
                f"first RPC {pending.first_rpc}"
            ),
        )
        tx.delete_pending_unauthenticated(pending.source, pending.window_start)
        flushed += 1
    return flushed


def _with_hash(event: AuditEvent) -> AuditEvent:
    return replace(event, event_hash=event_hash(event))
