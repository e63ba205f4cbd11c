"""Plain Python values to and from AdminService and AuditService messages.

Amounts travel as integers of 1e-9 epsilon or rho. Going out, an amount must be exactly
representable in those units (a float is read as its shortest decimal form, so 0.3 means
0.3, not 0.29999999999999998890); coming back it is an exact `Decimal`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import polars as pl

from dpgate._admin_types import (
    AuditEvent,
    AuditHead,
    ChainVerification,
    DatasetBudget,
    DatasetCap,
    PublishStep,
    Requester,
    TokenRecord,
)
from dpgate._convert import accounting_name, spend
from dpgate_proto.v1 import admin_pb2, audit_pb2, types_pb2
from dpgate_shared.units import Amount, to_units_exact

ROLES = {
    "analyst": admin_pb2.ROLE_ANALYST,
    "admin": admin_pb2.ROLE_ADMIN,
    "auditor": admin_pb2.ROLE_AUDITOR,
    "provider": admin_pb2.ROLE_PROVIDER,
}
EXPORT_FORMATS = {"csv": audit_pb2.EXPORT_FORMAT_CSV, "json": audit_pb2.EXPORT_FORMAT_JSON}
SPENDING_SCHEMA = pl.Schema(
    {
        "requester_id": pl.String(),
        "organisation": pl.String(),
        "dataset_id": pl.String(),
        "accounting": pl.String(),
        "allocated": pl.Decimal(38, 9),
        "spent": pl.Decimal(38, 9),
        "release_count": pl.Int64(),
        "purpose": pl.String(),
        "agreement": pl.String(),
        "remaining": pl.Decimal(38, 9),
        "expires_at": pl.Datetime("us", "UTC"),
        "last_spend_at": pl.Datetime("us", "UTC"),
    }
)


def to_nano_units(value: Amount, what: str) -> int:
    """`value` in units of 1e-9, exactly; refuses what those units cannot hold.

    Example:
        >>> to_nano_units(0.3, "epsilon")
        300000000
    """
    return to_units_exact(value, what)


def spend_message(epsilon: Amount | None, rho: Amount | None) -> types_pb2.Spend:
    """Exactly one of epsilon (pure-DP datasets) or rho (zCDP datasets), on the wire."""
    if (epsilon is None) == (rho is None):
        raise ValueError("give exactly one of epsilon (pure_dp datasets) or rho (zcdp datasets)")
    if epsilon is not None:
        units = to_nano_units(epsilon, "epsilon")
        return types_pb2.Spend(accounting=types_pb2.ACCOUNTING_PURE_DP, nano_units=units)
    assert rho is not None
    return types_pb2.Spend(
        accounting=types_pb2.ACCOUNTING_ZCDP, nano_units=to_nano_units(rho, "rho")
    )


def time_text(moment: dt.datetime | None, what: str) -> str:
    """RFC 3339 in UTC ("2026-01-31T00:00:00Z"), "" for none; refuses a naive datetime."""
    if moment is None:
        return ""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"{what} must be timezone-aware, e.g. datetime(2026, 1, 31, tzinfo=timezone.utc)"
        )
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def role_value(role: str) -> admin_pb2.Role.ValueType:
    """The wire role for "analyst", "admin", "auditor" or "provider"."""
    try:
        return ROLES[role.lower()]
    except KeyError:
        raise ValueError(f"unknown role {role!r}; use one of {', '.join(ROLES)}") from None


def export_format(name: str) -> audit_pb2.ExportFormat.ValueType:
    """The wire format for "json" or "csv"."""
    try:
        return EXPORT_FORMATS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; use 'json' or 'csv'") from None


def requester(message: admin_pb2.Requester) -> Requester:
    return Requester(
        requester_id=message.requester_id,
        name=message.name,
        organisation=message.organisation,
        purpose=message.purpose,
        enabled=message.enabled,
    )


def dataset_cap(dataset_id: str, message: admin_pb2.SetDatasetCapResponse) -> DatasetCap:
    return DatasetCap(
        dataset_id=dataset_id,
        accounting=accounting_name(message.cap),
        cap=spend(message.cap),
        spent=spend(message.spent),
    )


def optional_time(text: str) -> dt.datetime | None:
    """An RFC 3339 time from the server, or None for the empty string."""
    return dt.datetime.fromisoformat(text) if text else None


ROLE_NAMES = {
    admin_pb2.ROLE_ANALYST: "analyst",
    admin_pb2.ROLE_ADMIN: "admin",
    admin_pb2.ROLE_AUDITOR: "auditor",
    admin_pb2.ROLE_PROVIDER: "provider",
}


def token_record(message: admin_pb2.TokenRecord) -> TokenRecord:
    return TokenRecord(
        token_id=message.token_id,
        requester_id=message.requester_id,
        role=ROLE_NAMES.get(message.role, "unspecified"),
        practice_codes=tuple(message.practice_codes),
        created_at=dt.datetime.fromisoformat(message.created_at),
        expires_at=optional_time(message.expires_at),
        revoked_at=optional_time(message.revoked_at),
    )


def dataset_budget(message: admin_pb2.GetDatasetBudgetResponse) -> DatasetBudget:
    return DatasetBudget(
        dataset_id=message.dataset.dataset_id,
        version=message.dataset.version,
        accounting=accounting_name(message.cap),
        cap=spend(message.cap),
        spent=spend(message.spent),
        allocated=spend(message.allocated),
        publish_spent=spend(message.publish_spent),
        allocation_count=message.allocation_count,
        release_count=message.release_count,
        share_releases=message.share_releases,
    )


def spending_frame(rows: Iterable[admin_pb2.SpendingRow]) -> pl.DataFrame:
    """The spending report as a frame: one row per requester and dataset, exact amounts."""
    records = [
        (
            row.requester_id,
            row.organisation,
            row.dataset_id,
            accounting_name(row.allocated),
            spend(row.allocated),
            spend(row.spent),
            row.release_count,
            row.purpose,
            row.agreement_reference,
            spend(row.remaining),
            optional_time(row.expires_at),
            optional_time(row.last_spend_at),
        )
        for row in rows
    ]
    return pl.DataFrame(records, schema=SPENDING_SCHEMA, orient="row")


def audit_head(message: audit_pb2.AuditHead) -> AuditHead:
    return AuditHead(event_count=message.event_count, head_hash=message.head_hash)


def audit_head_message(head: AuditHead) -> audit_pb2.AuditHead:
    return audit_pb2.AuditHead(event_count=head.event_count, head_hash=head.head_hash)


def audit_event(message: audit_pb2.AuditEvent) -> AuditEvent:
    accounting = accounting_name(message.cost)
    return AuditEvent(
        sequence=message.sequence,
        occurred_at=dt.datetime.fromisoformat(message.occurred_at),
        requester_id=message.requester_id,
        token_id=message.token_id,
        role=message.role,
        rpc=message.rpc,
        dataset_id=message.dataset_id,
        query_text=message.query_text,
        detail=message.detail,
        cost=spend(message.cost),
        accounting="" if accounting == "unspecified" else accounting,
        outcome=message.outcome,
        release_id=message.release_id,
        request_id=message.request_id,
        previous_hash=message.previous_hash,
        event_hash=message.event_hash,
    )


def chain_verification(message: audit_pb2.VerifyAuditChainResponse) -> ChainVerification:
    return ChainVerification(
        valid=message.valid,
        first_bad_sequence=message.first_bad_sequence or None,
        problem=message.problem,
        head=audit_head(message.head),
    )


STAGES = {
    admin_pb2.PUBLISH_STAGE_READING: "reading",
    admin_pb2.PUBLISH_STAGE_BOUNDING: "bounding",
    admin_pb2.PUBLISH_STAGE_WRITING: "writing",
    admin_pb2.PUBLISH_STAGE_VERIFYING: "verifying",
}


def publish_step(message: admin_pb2.PublishProgress) -> PublishStep:
    """A step of a publish; a stage this client does not know keeps its number."""
    return PublishStep(
        stage=STAGES.get(message.stage, f"stage {message.stage}"),
        done=message.done,
        total=message.total,
        unit=message.unit,
        fraction=message.fraction,
        elapsed_seconds=message.elapsed_seconds,
        seconds_left=message.seconds_left if message.HasField("seconds_left") else None,
    )
