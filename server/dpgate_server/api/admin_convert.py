"""Conversions for AdminService and AuditService messages (no decisions here).

Malformed fields (an unparsable time, a role or format left unset, an amount in the wrong
unit) are refused with `BadRequestError` naming the field; everything the ledger can
judge (negative amounts, unknown ids, caps below spending) is left to the ledger.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping

from google.protobuf import json_format
from google.protobuf.message import Message

from dpgate_proto.v1 import admin_pb2, audit_pb2, types_pb2
from dpgate_server.api.convert import ACCOUNTING_TO_PROTO, spend_to_proto
from dpgate_server.api.errors import BadRequestError
from dpgate_server.canonical import canonical_json
from dpgate_server.ledger._time import format_time
from dpgate_server.ledger.model import (
    AuditEvent,
    ChainHead,
    ChainVerification,
    Requester,
    Role,
    SpendingLine,
    TokenInfo,
)
from dpgate_server.vocabulary.accounting import Accounting
from dpgate_server.vocabulary.errors import ErrorReason

ROLE_FROM_PROTO = {
    admin_pb2.ROLE_ANALYST: Role.ANALYST,
    admin_pb2.ROLE_ADMIN: Role.ADMIN,
    admin_pb2.ROLE_AUDITOR: Role.AUDITOR,
    admin_pb2.ROLE_PROVIDER: Role.PROVIDER,
}
ROLE_TO_PROTO = {role: value for value, role in ROLE_FROM_PROTO.items()}
_UNIT_NAMES = {Accounting.PURE_DP: "epsilon (pure_dp)", Accounting.ZCDP: "rho (zcdp)"}


def canonical_request(message: Message) -> str:
    """The request as canonical JSON, for the audit chain's `query_text`.

    Admin requests hold no secrets (a token's secret is only ever in a response), so the
    whole request is recorded: field names as in the contract, keys sorted.
    """
    fields = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return canonical_json(fields)


def role_from_proto(role: admin_pb2.Role.ValueType) -> Role:
    """The ledger role; an unset or unknown role is refused."""
    found = ROLE_FROM_PROTO.get(role)
    if found is None:
        raise BadRequestError(
            ErrorReason.BAD_ROLE, "role must be one of ANALYST, ADMIN, AUDITOR or PROVIDER", "role"
        )
    return found


def time_from_proto(text: str, field: str) -> dt.datetime | None:
    """An RFC 3339 time with its offset, as UTC; empty means none."""
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise BadRequestError(
            ErrorReason.BAD_TIME,
            f"{field} must be an RFC 3339 time with an offset, e.g. 2026-01-31T00:00:00Z; "
            f"got {text!r}",
            field,
        )
    return moment.astimezone(dt.UTC)


def spend_units(spend: types_pb2.Spend, accounting: Accounting, field: str, owner: str) -> int:
    """The amount in ledger units, if it is in the unit `owner` (a dataset) is measured in.

    A pure-DP dataset counts epsilon and a zCDP one rho; adding one to the other would be
    meaningless, so a mismatch is refused rather than converted.
    """
    if spend.accounting != ACCOUNTING_TO_PROTO[accounting]:
        raise BadRequestError(
            ErrorReason.ACCOUNTING_MISMATCH,
            f"{owner} is measured in {_UNIT_NAMES[accounting]}; {field} must use that unit",
            field,
        )
    return spend.nano_units


def requester_to_proto(requester: Requester) -> admin_pb2.Requester:
    return admin_pb2.Requester(
        requester_id=requester.requester_id,
        name=requester.name,
        organisation=requester.organisation,
        purpose=requester.agreement,
        enabled=requester.enabled,
    )


def token_to_proto(info: TokenInfo) -> admin_pb2.TokenRecord:
    """A token's record: ids, role and dates only (the ledger keeps no secret to leak)."""
    return admin_pb2.TokenRecord(
        token_id=info.token_id,
        requester_id=info.requester_id,
        role=ROLE_TO_PROTO[info.role],
        practice_codes=sorted(info.practice_codes),
        created_at=format_time(info.created_at),
        expires_at=_optional_time(info.expires_at),
        revoked_at=_optional_time(info.revoked_at),
    )


def _optional_time(moment: dt.datetime | None) -> str:
    return "" if moment is None else format_time(moment)


def spending_rows_to_proto(
    lines: list[SpendingLine], accounting: Mapping[str, Accounting], chunk: int
) -> Iterator[admin_pb2.GetSpendingReportResponse]:
    """The report's rows in messages of at most `chunk` rows (at least one message)."""
    rows = [
        admin_pb2.SpendingRow(
            requester_id=line.requester_id,
            organisation=line.organisation,
            dataset_id=line.dataset_id,
            allocated=spend_to_proto(accounting.get(line.dataset_id), line.granted_units),
            spent=spend_to_proto(accounting.get(line.dataset_id), line.spent_units),
            release_count=line.releases,
            purpose=line.purpose,
            agreement_reference=line.agreement,
            remaining=spend_to_proto(accounting.get(line.dataset_id), line.remaining_units),
            expires_at=_optional_time(line.expires_at),
            last_spend_at=_optional_time(line.last_spend_at),
        )
        for line in lines
    ]
    for start in range(0, max(len(rows), 1), chunk):
        yield admin_pb2.GetSpendingReportResponse(rows=rows[start : start + chunk])


def head_to_proto(head: ChainHead) -> audit_pb2.AuditHead:
    return audit_pb2.AuditHead(event_count=head.count, head_hash=head.hash)


def head_from_proto(head: audit_pb2.AuditHead) -> ChainHead:
    return ChainHead(count=head.event_count, hash=head.head_hash)


def event_to_proto(event: AuditEvent, accounting: Mapping[str, Accounting]) -> audit_pb2.AuditEvent:
    """An event with every field its hash covers (None travels as the empty string)."""
    dataset = event.dataset_id or ""
    return audit_pb2.AuditEvent(
        sequence=event.seq,
        occurred_at=format_time(event.at),
        requester_id=event.requester_id or "",
        role=event.role or "",
        rpc=event.rpc,
        detail=event.detail,
        cost=spend_to_proto(accounting.get(dataset), event.cost_units),
        outcome=event.outcome.value,
        release_id=event.release_id or "",
        request_id=event.request_id,
        previous_hash=event.prev_hash,
        event_hash=event.event_hash,
        dataset_id=dataset,
        token_id=event.token_id or "",
        query_text=event.query_text,
    )


def verification_to_proto(result: ChainVerification) -> audit_pb2.VerifyAuditChainResponse:
    return audit_pb2.VerifyAuditChainResponse(
        valid=result.ok,
        first_bad_sequence=result.first_bad_seq or 0,
        problem=result.problem or "",
        head=head_to_proto(result.head),
    )


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    """`data` in pieces of at most `size` bytes (one empty piece for empty data)."""
    for start in range(0, max(len(data), 1), size):
        yield data[start : start + size]
