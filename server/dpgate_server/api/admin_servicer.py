"""AdminService: what budget administrators call. Thin: convert, call the ledger, convert back.

Every change goes to `Ledger.admin` with the caller's `RequestInfo`, whose `query_text` is
the canonical request; the ledger writes the change and its audit event in one
transaction, so mutating RPCs record only their failures here (`record_success=False`).
A token's secret appears in exactly one place: the IssueToken response.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Iterator

import grpc
from google.protobuf.message import Message

from dpgate_proto.v1 import admin_pb2, admin_pb2_grpc, types_pb2
from dpgate_server.api.admin_convert import (
    canonical_request,
    requester_to_proto,
    role_from_proto,
    spend_units,
    spending_rows_to_proto,
    time_from_proto,
    token_to_proto,
)
from dpgate_server.api.call_context import current_call
from dpgate_server.api.convert import budget_to_proto, dataset_summary_to_proto, spend_to_proto
from dpgate_server.api.errors import BadRequestError, NotYetAvailableError, audited, require
from dpgate_server.api.publish_rpc import publish_dataset_version, publish_with_progress
from dpgate_server.governance.service import Governance
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import RequestInfo
from dpgate_server.store.catalog import Catalog
from dpgate_server.vocabulary.errors import ErrorReason

SPENDING_ROWS_PER_MESSAGE = 500
MAX_TEXT_LENGTH = 200
"""Longest name, organisation, purpose or reason accepted (they are shown in reports)."""


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """Budget administration; every decision (and its audit event) is in the ledger."""

    def __init__(
        self, ledger: Ledger, catalog: Catalog, governance: Governance | None = None
    ) -> None:
        self._ledger = ledger
        self._catalog = catalog
        self._governance = governance

    @audited(record_success=False)
    def CreateRequester(
        self, request: admin_pb2.CreateRequesterRequest, context: grpc.ServicerContext
    ) -> admin_pb2.CreateRequesterResponse:
        name = _text(request.name, "name")
        requester = self._ledger.admin.create_requester(
            new_requester_id(name),
            name=name,
            organisation=_text(request.organisation, "organisation"),
            agreement=_text(request.purpose, "purpose"),
            request=_request_info(request),
        )
        return admin_pb2.CreateRequesterResponse(requester=requester_to_proto(requester))

    @audited(record_success=True)
    def ListRequesters(
        self, request: admin_pb2.ListRequestersRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListRequestersResponse:
        requesters = self._ledger.admin.list_requesters()
        return admin_pb2.ListRequestersResponse(
            requesters=[requester_to_proto(r) for r in requesters]
        )

    @audited(record_success=False)
    def DisableRequester(
        self, request: admin_pb2.DisableRequesterRequest, context: grpc.ServicerContext
    ) -> admin_pb2.DisableRequesterResponse:
        requester = self._ledger.admin.set_requester_enabled(
            require(request.requester_id, "requester_id"), False, request=_request_info(request)
        )
        return admin_pb2.DisableRequesterResponse(requester=requester_to_proto(requester))

    @audited(record_success=False)
    def EnableRequester(
        self, request: admin_pb2.EnableRequesterRequest, context: grpc.ServicerContext
    ) -> admin_pb2.EnableRequesterResponse:
        requester = self._ledger.admin.set_requester_enabled(
            require(request.requester_id, "requester_id"), True, request=_request_info(request)
        )
        return admin_pb2.EnableRequesterResponse(requester=requester_to_proto(requester))

    @audited(record_success=False)
    def IssueToken(
        self, request: admin_pb2.IssueTokenRequest, context: grpc.ServicerContext
    ) -> admin_pb2.IssueTokenResponse:
        issued = self._ledger.admin.issue_token(
            require(request.requester_id, "requester_id"),
            role_from_proto(request.role),
            request=_request_info(request),
            expires_at=time_from_proto(request.expires_at, "expires_at"),
            practice_codes=request.practice_codes,
        )
        return admin_pb2.IssueTokenResponse(token_id=issued.info.token_id, token=issued.token)

    @audited(record_success=False)
    def RevokeToken(
        self, request: admin_pb2.RevokeTokenRequest, context: grpc.ServicerContext
    ) -> admin_pb2.RevokeTokenResponse:
        self._ledger.admin.revoke_token(
            require(request.token_id, "token_id"), request=_request_info(request)
        )
        return admin_pb2.RevokeTokenResponse()

    @audited(record_success=True)
    def ListTokens(
        self, request: admin_pb2.ListTokensRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListTokensResponse:
        tokens = self._ledger.admin.list_tokens(request.requester_id or None)
        return admin_pb2.ListTokensResponse(tokens=[token_to_proto(t) for t in tokens])

    @audited(record_success=False)
    def GrantAllocation(
        self, request: admin_pb2.GrantAllocationRequest, context: grpc.ServicerContext
    ) -> admin_pb2.GrantAllocationResponse:
        """Create the allocation, or top it up if it exists.

        On a top-up a non-empty `expires_at` replaces the allocation's expiry; an empty one
        leaves it as it was (it does not clear it).
        """
        requester_id = require(request.requester_id, "requester_id")
        dataset = self._ledger.get_dataset(require(request.dataset_id, "dataset_id"))
        units = spend_units(_amount(request), dataset.accounting, "amount", dataset.dataset_id)
        expires_at = time_from_proto(request.expires_at, "expires_at")
        self._ledger.admin.grant_or_top_up(
            requester_id,
            dataset.dataset_id,
            units,
            request=_request_info(request),
            purpose=request.purpose,
            agreement=request.agreement_reference,
            expires_at=expires_at,
        )
        budget = self._ledger.get_budget(requester_id, dataset.dataset_id)
        return admin_pb2.GrantAllocationResponse(budget=budget_to_proto(budget, dataset.accounting))

    @audited(record_success=False)
    def ReduceAllocation(
        self, request: admin_pb2.ReduceAllocationRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ReduceAllocationResponse:
        requester_id = require(request.requester_id, "requester_id")
        dataset = self._ledger.get_dataset(require(request.dataset_id, "dataset_id"))
        units = spend_units(_amount(request), dataset.accounting, "amount", dataset.dataset_id)
        self._ledger.admin.reduce_allocation(
            requester_id, dataset.dataset_id, units, request=_request_info(request)
        )
        budget = self._ledger.get_budget(requester_id, dataset.dataset_id)
        return admin_pb2.ReduceAllocationResponse(
            budget=budget_to_proto(budget, dataset.accounting)
        )

    @audited(record_success=False)
    def SetDatasetCap(
        self, request: admin_pb2.SetDatasetCapRequest, context: grpc.ServicerContext
    ) -> admin_pb2.SetDatasetCapResponse:
        dataset = self._ledger.get_dataset(require(request.dataset_id, "dataset_id"))
        if not request.HasField("cap"):
            raise BadRequestError(ErrorReason.MISSING_FIELD, "cap is required", "cap")
        units = spend_units(request.cap, dataset.accounting, "cap", dataset.dataset_id)
        self._ledger.admin.set_dataset_cap(
            dataset.dataset_id,
            units,
            reason=_text(request.reason, "reason") if request.reason.strip() else "",
            request=_request_info(request),
            force=request.force,
        )
        after = self._ledger.get_dataset(dataset.dataset_id)
        return admin_pb2.SetDatasetCapResponse(
            cap=spend_to_proto(after.accounting, after.cap_units),
            spent=spend_to_proto(after.accounting, after.spent_units),
        )

    @audited(record_success=True)
    def GetDatasetBudget(
        self, request: admin_pb2.GetDatasetBudgetRequest, context: grpc.ServicerContext
    ) -> admin_pb2.GetDatasetBudgetResponse:
        dataset_id = require(request.dataset_id, "dataset_id")
        self._ledger.get_dataset(dataset_id)  # an unknown dataset is NOT_FOUND
        totals = next(
            d for d in self._ledger.admin.spending_report().datasets if d.dataset_id == dataset_id
        )
        accounting = totals.accounting
        return admin_pb2.GetDatasetBudgetResponse(
            dataset=dataset_summary_to_proto(self._catalog.current(dataset_id)),
            cap=spend_to_proto(accounting, totals.cap_units),
            spent=spend_to_proto(accounting, totals.spent_units),
            allocated=spend_to_proto(accounting, totals.allocated_units),
            publish_spent=spend_to_proto(accounting, totals.publish_spent_units),
            allocation_count=totals.allocations,
            share_releases=totals.share_releases,
            release_count=totals.releases,
        )

    @audited(record_success=False)
    def SetReleaseSharing(
        self, request: admin_pb2.SetReleaseSharingRequest, context: grpc.ServicerContext
    ) -> admin_pb2.SetReleaseSharingResponse:
        dataset = self._ledger.admin.set_release_sharing(
            require(request.dataset_id, "dataset_id"),
            request.share_releases,
            request=_request_info(request),
        )
        return admin_pb2.SetReleaseSharingResponse(share_releases=dataset.share_releases)

    @audited(record_success=True)
    def GetSpendingReport(
        self, request: admin_pb2.GetSpendingReportRequest, context: grpc.ServicerContext
    ) -> Iterator[admin_pb2.GetSpendingReportResponse]:
        if request.dataset_id:
            self._ledger.get_dataset(request.dataset_id)  # an unknown dataset is NOT_FOUND
        report = self._ledger.admin.spending_report()
        accounting = {d.dataset_id: d.accounting for d in report.datasets}
        lines = [
            line
            for line in report.lines
            if not request.dataset_id or line.dataset_id == request.dataset_id
        ]
        yield from spending_rows_to_proto(lines, accounting, SPENDING_ROWS_PER_MESSAGE)

    @audited(record_success=False)
    def PublishDatasetVersion(
        self, request: admin_pb2.PublishDatasetVersionRequest, context: grpc.ServicerContext
    ) -> admin_pb2.PublishDatasetVersionResponse:
        if self._governance is None:
            raise NotYetAvailableError("PublishDatasetVersion", "a server with data governance")
        return publish_dataset_version(self._governance, request)

    @audited(record_success=False)
    def PublishDatasetVersionWithProgress(
        self,
        request: admin_pb2.PublishDatasetVersionWithProgressRequest,
        context: grpc.ServicerContext,
    ) -> Iterator[admin_pb2.PublishDatasetVersionWithProgressResponse]:
        if self._governance is None:
            raise NotYetAvailableError(
                "PublishDatasetVersionWithProgress", "a server with data governance"
            )
        yield from publish_with_progress(self._governance, self._ledger, request, context)


def new_requester_id(name: str) -> str:
    """A readable, unguessable id: the name's slug and 8 random hex digits.

    Example:
        >>> new_requester_id("NHS England: Analytics")[:22]
        'nhs-england-analytics-'
    """
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:32].strip("-")
    return f"{slug or 'requester'}-{secrets.token_hex(4)}"


def _request_info(request: Message) -> RequestInfo:
    """The caller's RequestInfo, its query text the canonical request."""
    return current_call().request_info(query_text=canonical_request(request))


def _text(value: str, field: str) -> str:
    """A required free-text field, trimmed, of bounded length."""
    text = require(value, field).strip()
    if len(text) > MAX_TEXT_LENGTH:
        raise BadRequestError(
            ErrorReason.FIELD_TOO_LONG, f"{field} is at most {MAX_TEXT_LENGTH} characters", field
        )
    return text


def _amount(
    request: admin_pb2.GrantAllocationRequest | admin_pb2.ReduceAllocationRequest,
) -> types_pb2.Spend:
    if not request.HasField("amount"):
        raise BadRequestError(ErrorReason.MISSING_FIELD, "amount is required", "amount")
    return request.amount
