"""AuditService: what auditors call. Thin: read the ledger's chain and report, convert, stream.

Every RPC here only reads, so each successful call is itself recorded in the chain
(`record_success=True`): who looked at the log, and when, is part of the log.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from dpgate_proto.v1 import audit_pb2, audit_pb2_grpc
from dpgate_server.api.admin_convert import (
    chunks,
    event_to_proto,
    head_from_proto,
    head_to_proto,
    verification_to_proto,
)
from dpgate_server.api.errors import BadRequestError, audited
from dpgate_server.api.signed_head_convert import signed_head_from_proto, signed_head_to_proto
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.signed_heads import HeadPublisher
from dpgate_server.vocabulary.accounting import Accounting
from dpgate_server.vocabulary.errors import ErrorReason

EVENTS_PER_MESSAGE = 500
REPORT_BYTES_PER_MESSAGE = 64 * 1024


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """The audit chain, its verification and the transparency report."""

    def __init__(self, ledger: Ledger, heads: HeadPublisher | None = None) -> None:
        self._ledger = ledger
        self._heads = heads

    @audited(record_success=True)
    def ListAuditEvents(
        self, request: audit_pb2.ListAuditEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[audit_pb2.ListAuditEventsResponse]:
        """Events from `from_sequence`, up to the head as it was when the call started.

        Reading stops at that head so the events this very call appends (and any written
        meanwhile) do not make the stream chase the chain's end.
        """
        after = max(request.from_sequence, 1) - 1
        last = self._ledger.head().count
        if request.limit:
            last = min(last, after + request.limit)
        accounting = self._accounting()
        while after < last:
            events = self._ledger.list_events(after, min(EVENTS_PER_MESSAGE, last - after))
            if not events:
                break
            after = events[-1].seq
            yield audit_pb2.ListAuditEventsResponse(
                events=[event_to_proto(e, accounting) for e in events]
            )

    @audited(record_success=True)
    def VerifyAuditChain(
        self, request: audit_pb2.VerifyAuditChainRequest, context: grpc.ServicerContext
    ) -> audit_pb2.VerifyAuditChainResponse:
        expected = (
            head_from_proto(request.expected_head) if request.HasField("expected_head") else None
        )
        return verification_to_proto(self._ledger.verify(expected))

    @audited(record_success=True)
    def GetAuditHead(
        self, request: audit_pb2.GetAuditHeadRequest, context: grpc.ServicerContext
    ) -> audit_pb2.GetAuditHeadResponse:
        return audit_pb2.GetAuditHeadResponse(head=head_to_proto(self._ledger.head()))

    @audited(record_success=True)
    def ExportTransparencyReport(
        self, request: audit_pb2.ExportTransparencyReportRequest, context: grpc.ServicerContext
    ) -> Iterator[audit_pb2.ExportTransparencyReportResponse]:
        if request.format == audit_pb2.EXPORT_FORMAT_CSV:
            render = "csv"
        elif request.format == audit_pb2.EXPORT_FORMAT_JSON:
            render = "json"
        else:
            raise BadRequestError(ErrorReason.BAD_FORMAT, "format must be CSV or JSON", "format")
        report = self._ledger.transparency_report()
        text = report.to_csv() if render == "csv" else report.to_json()
        for piece in chunks(text.encode("utf-8"), REPORT_BYTES_PER_MESSAGE):
            yield audit_pb2.ExportTransparencyReportResponse(data=piece)

    @audited(record_success=True)
    def GetSignedAuditHead(
        self, request: audit_pb2.GetSignedAuditHeadRequest, context: grpc.ServicerContext
    ) -> audit_pb2.GetSignedAuditHeadResponse:
        if self._heads is None:
            return audit_pb2.GetSignedAuditHeadResponse()
        reply = audit_pb2.GetSignedAuditHeadResponse(public_key=self._heads.public_key)
        latest = self._heads.latest()
        if latest is not None:
            reply.signed_head.CopyFrom(signed_head_to_proto(latest))
        return reply

    @audited(record_success=True)
    def VerifySignedAuditHead(
        self, request: audit_pb2.VerifySignedAuditHeadRequest, context: grpc.ServicerContext
    ) -> audit_pb2.VerifySignedAuditHeadResponse:
        """Signature first (a head this server never signed proves nothing), then the chain."""
        if not request.HasField("signed_head"):
            raise BadRequestError(
                ErrorReason.BAD_SIGNED_HEAD, "signed_head is required", "signed_head"
            )
        signed = signed_head_from_proto(request.signed_head)
        if self._heads is None or not signed.signature_matches(self._heads.public_key):
            why = (
                "this server signs no heads (audit.signing_key_file is not set)"
                if self._heads is None
                else "the signature is not this server's: a forged head, or one signed with "
                "another key"
            )
            return audit_pb2.VerifySignedAuditHeadResponse(
                valid=False, problem=why, head=head_to_proto(self._ledger.head())
            )
        result = self._ledger.verify_from(signed.head)
        return audit_pb2.VerifySignedAuditHeadResponse(
            valid=result.ok,
            signature_valid=True,
            first_bad_sequence=result.first_bad_seq or 0,
            problem=result.problem or "",
            head=head_to_proto(self._ledger.head() if not result.ok else result.head),
        )

    def _accounting(self) -> dict[str, Accounting]:
        return {d.dataset_id: d.accounting for d in self._ledger.admin.list_datasets()}
