"""Signed heads of the audit chain (issue 19, item 4).

The chain's hashes make any edit inside it visible, but not a cut tail: deleting the last
events and rewriting the stored head leaves a chain that verifies. A head signed with the
server's Ed25519 key and published (files here, the public page, anyone's copy) fixes
"event n had hash h" outside the server's reach; `Ledger.verify_from` then shows whether
the chain still holds it.
"""

from dpgate_server.signed_heads.keys import SigningKeyError, load_or_create_signing_key
from dpgate_server.signed_heads.publisher import HeadPublisher
from dpgate_server.signed_heads.signed_head import SignedHead, SignedHeadFormatError, sign_head

__all__ = [
    "HeadPublisher",
    "SignedHead",
    "SignedHeadFormatError",
    "SigningKeyError",
    "load_or_create_signing_key",
    "sign_head",
]
