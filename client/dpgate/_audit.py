"""`AuditClient`: what an auditor uses to read and verify the audit chain."""

from __future__ import annotations

import functools
import json
from typing import Any

from dpgate._admin_convert import (
    audit_event,
    audit_head,
    audit_head_message,
    chain_verification,
    export_format,
)
from dpgate._admin_types import AuditEvent, AuditHead, ChainVerification
from dpgate._channel import Connection
from dpgate_proto.v1 import audit_pb2, audit_pb2_grpc


class AuditClient(Connection):
    """A connection to a dpgate server with an auditor token.

    Keep the head you see (`head()`, or the one in a transparency report): a later
    `verify(expected_head=...)` then detects a chain that was cut or rewritten since.

    Example:
        >>> with AuditClient("127.0.0.1:50051", token="dpg_...") as audit:  # doctest: +SKIP
        ...     kept = audit.head()
        ...     audit.verify(expected_head=kept).valid
        True

    Args:
        target: host:port of the server; or of its replicas, as a list or one
            comma-separated string (calls are spread over them and go on when one fails).
        token: an auditor bearer token.
        root_certificates: PEM of the CA to trust; with it the connection uses TLS.
        private_key: PEM client key, for servers that require mutual TLS.
        certificate_chain: PEM client certificate, likewise.
        timeout: seconds each call may take.
    """

    @functools.cached_property
    def _audit(self) -> audit_pb2_grpc.AuditServiceStub:
        return audit_pb2_grpc.AuditServiceStub(self._channel)

    def events(self, from_sequence: int = 1, limit: int | None = None) -> list[AuditEvent]:
        """Events from `from_sequence` on, oldest first (at most `limit` if given)."""
        if from_sequence < 1 or (limit is not None and limit < 1):
            raise ValueError("from_sequence starts at 1, and limit (if given) is at least 1")
        request = audit_pb2.ListAuditEventsRequest(from_sequence=from_sequence, limit=limit or 0)
        return [
            audit_event(event)
            for chunk in self._stream(self._audit.ListAuditEvents, request)
            for event in chunk.events
        ]

    def verify(self, expected_head: AuditHead | None = None) -> ChainVerification:
        """Check every event's hash and link, and that the chain still holds `expected_head`."""
        request = audit_pb2.VerifyAuditChainRequest()
        if expected_head is not None:
            request.expected_head.CopyFrom(audit_head_message(expected_head))
        return chain_verification(self._call(self._audit.VerifyAuditChain, request))

    def head(self) -> AuditHead:
        """The chain's current length and last hash."""
        reply = self._call(self._audit.GetAuditHead, audit_pb2.GetAuditHeadRequest())
        return audit_head(reply.head)

    def transparency_report(self, format: str = "json") -> bytes:
        """The public report (every answered query and its spend, never a value), as bytes.

        `format` is "json" (one document) or "csv" (see the server's docs for the layout).
        """
        request = audit_pb2.ExportTransparencyReportRequest(format=export_format(format))
        return b"".join(
            chunk.data for chunk in self._stream(self._audit.ExportTransparencyReport, request)
        )

    def signed_head(self) -> dict[str, Any] | None:
        """The latest head the server signed, in its published JSON form (None if none).

        Keep it (a file, a copy in another place): `verify_signed_head` later shows whether
        the chain still holds it.
        """
        reply = self._call(self._audit.GetSignedAuditHead, audit_pb2.GetSignedAuditHeadRequest())
        if not reply.HasField("signed_head"):
            return None
        head = reply.signed_head
        return {
            "format": SIGNED_HEAD_FORMAT,
            "event_count": head.event_count,
            "head_hash": head.head_hash,
            "signed_at": head.signed_at,
            "public_key": head.public_key,
            "signature": head.signature,
        }

    def verify_signed_head(self, signed_head_json: str) -> ChainVerification:
        """Check a kept signed head (its published JSON): the signature is this server's,
        event `event_count` still has `head_hash`, and the chain verifies from there.

        A chain whose last events were deleted and whose stored head was rewritten passes
        `verify()` but fails here.

        Raises:
            ValueError: the text is not a signed head.
        """
        request = audit_pb2.VerifySignedAuditHeadRequest(
            signed_head=signed_head_message(signed_head_json)
        )
        reply = self._call(self._audit.VerifySignedAuditHead, request)
        return ChainVerification(
            valid=reply.valid,
            first_bad_sequence=reply.first_bad_sequence or None,
            problem=reply.problem,
            head=audit_head(reply.head),
        )


SIGNED_HEAD_FORMAT = "dpgate-signed-head/1"
MAX_SIGNED_HEAD_CHARS = 4096


def signed_head_message(text: str) -> audit_pb2.SignedAuditHead:
    """The wire form of a published signed head (the server checks every field)."""
    if len(text) > MAX_SIGNED_HEAD_CHARS:
        raise ValueError(f"a signed head is under {MAX_SIGNED_HEAD_CHARS} characters")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"a signed head is JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != SIGNED_HEAD_FORMAT:
        raise ValueError(f"not a signed head (format {SIGNED_HEAD_FORMAT!r})")
    count = raw.get("event_count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError("event_count must be a non-negative integer")
    fields = {}
    for name in ("head_hash", "signed_at", "public_key", "signature"):
        value = raw.get(name)
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string")
        fields[name] = value
    return audit_pb2.SignedAuditHead(event_count=count, **fields)
