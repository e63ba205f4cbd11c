"""ProviderService: practices' system suppliers upload extracts and record consent.

Thin: read the request stream into memory (the size limit applies while it streams, and a
token may only send bytes for its own practices, checked on the header before any chunk
is read), convert, call the governance facade, convert back. The facade audits every
change itself, so successful uploads and consent changes are not recorded twice here.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from dpgate_proto.v1 import provider_pb2, provider_pb2_grpc
from dpgate_server.api.admin_convert import canonical_request
from dpgate_server.api.call_context import current_call
from dpgate_server.api.errors import BadRequestError, audited, require
from dpgate_server.config import Settings
from dpgate_server.governance.consent import ConsentState
from dpgate_server.governance.errors import GovernanceError
from dpgate_server.governance.optouts import OptOutKind
from dpgate_server.governance.service import (
    Governance,
    GovernancePolicy,
    authorise,
    extract_too_large,
)
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.store.leases import ReaderLeases
from dpgate_server.store.pseudonym import load_or_create_key
from dpgate_server.store.store import DatasetStore
from dpgate_server.vocabulary.errors import ErrorReason

CONSENT_FROM_PROTO = {
    provider_pb2.CONSENT_STATE_GRANTED: ConsentState.GRANTED,
    provider_pb2.CONSENT_STATE_WITHDRAWN: ConsentState.WITHDRAWN,
}
CONSENT_TO_PROTO = {state: value for value, state in CONSENT_FROM_PROTO.items()}


class ProviderServicer(provider_pb2_grpc.ProviderServiceServicer):
    """Uploads, status and consent of a provider's practices (or, for status and consent,
    of any practice on an administrator's token)."""

    def __init__(self, governance: Governance, ledger: Ledger) -> None:
        self._governance = governance
        self._ledger = ledger

    @audited(record_success=False)
    def UploadExtract(
        self,
        request_iterator: Iterator[provider_pb2.UploadExtractRequest],
        context: grpc.ServicerContext,
    ) -> provider_pb2.UploadExtractResponse:
        call = current_call()
        limit = self._governance.policy.max_upload_bytes
        header = _header(request_iterator)
        authorise(call.principal, header.practice_code, uploading=True)
        if header.size_bytes > limit:
            raise extract_too_large(header.size_bytes, limit)
        data = _receive(request_iterator, header, limit)
        result = self._governance.ingest(
            header.dataset_id,
            header.practice_code,
            data,
            call.request_info(query_text=canonical_request(header)),
        )
        return provider_pb2.UploadExtractResponse(
            practice_code=result.practice_code,
            rows_staged=result.rows_staged,
            rows_opted_out=result.rows_opted_out,
        )

    @audited(record_success=True)
    def GetPracticeStatus(
        self, request: provider_pb2.GetPracticeStatusRequest, context: grpc.ServicerContext
    ) -> provider_pb2.GetPracticeStatusResponse:
        status = self._governance.status(
            require(request.dataset_id, "dataset_id"),
            require(request.practice_code, "practice_code"),
            current_call().principal,
        )
        upload = status.last_upload
        return provider_pb2.GetPracticeStatusResponse(
            consent=CONSENT_TO_PROTO[status.consent],
            last_upload_at="" if upload is None else upload.uploaded_at,
            rows_staged=0 if upload is None else upload.rows_staged,
        )

    @audited(record_success=False)
    def SetConsent(
        self, request: provider_pb2.SetConsentRequest, context: grpc.ServicerContext
    ) -> provider_pb2.SetConsentResponse:
        state = CONSENT_FROM_PROTO.get(request.consent)
        if state is None:
            raise BadRequestError(
                ErrorReason.MISSING_FIELD, "consent must be GRANTED or WITHDRAWN", "consent"
            )
        after = self._governance.set_consent(
            require(request.dataset_id, "dataset_id"),
            require(request.practice_code, "practice_code"),
            state,
            current_call().request_info(query_text=canonical_request(request)),
            request.instruction_reference,
        )
        return provider_pb2.SetConsentResponse(consent=CONSENT_TO_PROTO[after])


def _header(requests: Iterator[provider_pb2.UploadExtractRequest]) -> provider_pb2.UploadHeader:
    first = next(requests, None)
    if first is None or first.WhichOneof("part") != "header":
        raise BadRequestError(
            ErrorReason.MISSING_HEADER,
            "the first message of an upload must be its header",
            "header",
        )
    require(first.header.dataset_id, "header.dataset_id")
    require(first.header.practice_code, "header.practice_code")
    if first.header.size_bytes <= 0:
        raise BadRequestError(
            ErrorReason.MISSING_FIELD,
            "header.size_bytes is required: set it to the extract's size in bytes, so a cut-off "
            "upload is told from a whole one (0 means the size was not set, or the extract is "
            "empty)",
            "header.size_bytes",
        )
    return first.header


def _receive(
    requests: Iterator[provider_pb2.UploadExtractRequest],
    header: provider_pb2.UploadHeader,
    limit: int,
) -> bytes:
    """The extract's bytes, in memory only; refused as soon as they pass `limit`, or when
    they are not the `header.size_bytes` declared (a stream cut short looks complete)."""
    buffer = bytearray()
    for message in requests:
        if message.WhichOneof("part") != "chunk":
            raise BadRequestError(
                ErrorReason.UNEXPECTED_HEADER,
                "only the first message of an upload is a header",
                "header",
            )
        buffer += message.chunk
        if len(buffer) > limit:
            raise extract_too_large(len(buffer), limit)
    if len(buffer) != header.size_bytes:
        raise GovernanceError(
            ErrorReason.EXTRACT_TRUNCATED,
            f"received {len(buffer):,} bytes of the {header.size_bytes:,} the header declared: "
            "the upload was cut short or the size is wrong; nothing was staged",
        )
    return bytes(buffer)


def governance_for(
    settings: Settings, store: DatasetStore, ledger: Ledger, leases: ReaderLeases | None = None
) -> Governance:
    """The governance facade a server built from `settings` uses (nothing is read yet:
    the key is loaded on the first upload or publish)."""
    config = settings.governance
    root = config.staging_dir or settings.storage.data_dir / ".governance"
    policy = GovernancePolicy(
        root=root,
        max_upload_bytes=config.max_upload_bytes,
        opt_out_drops={
            OptOutKind.NATIONAL: config.national_opt_out_file,
            OptOutKind.TYPE1: config.type1_opt_out_file,
        },
        granted_by_default=frozenset(config.granted_by_default),
        publish_memory_bytes=settings.publishing.memory_mb * 1024 * 1024,
        keep_versions=settings.publishing.keep_versions,
        period_bounds=settings.publishing.period_bounds_of(),
        chosen_bounds=settings.publishing.chosen_bounds_of(),
        bias_figure=settings.publishing.bias_figure.policy(),
    )
    key_file = settings.storage.key_file
    return Governance(
        store, policy, lambda: load_or_create_key(key_file), ledger, leases, spends=ledger
    )
