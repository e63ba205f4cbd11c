"""Signed audit heads between the domain (`SignedHead`) and the wire (`SignedAuditHead`)."""

from __future__ import annotations

from dpgate_proto.v1 import audit_pb2
from dpgate_server.api.errors import BadRequestError
from dpgate_server.signed_heads import SignedHead, SignedHeadFormatError
from dpgate_server.vocabulary.errors import ErrorReason


def signed_head_to_proto(head: SignedHead) -> audit_pb2.SignedAuditHead:
    fields = head.to_dict()
    return audit_pb2.SignedAuditHead(
        event_count=head.event_count,
        head_hash=head.head_hash,
        signed_at=fields["signed_at"],
        public_key=head.public_key,
        signature=head.signature,
    )


def signed_head_from_proto(message: audit_pb2.SignedAuditHead) -> SignedHead:
    """The domain head; a malformed field is INVALID_ARGUMENT naming it."""
    try:
        return SignedHead.from_fields(
            message.event_count,
            message.head_hash,
            message.signed_at,
            message.public_key,
            message.signature,
        )
    except SignedHeadFormatError as exc:
        raise BadRequestError(
            ErrorReason.BAD_SIGNED_HEAD, f"signed_head: {exc}", "signed_head"
        ) from None
