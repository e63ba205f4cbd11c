"""A signed head: "the chain had `event_count` events and the last one hashed `head_hash`".

The signature covers a fixed text form (format, count, hash, time), not JSON, so any
language can check it: Ed25519 over the UTF-8 bytes of

    dpgate-signed-head/1
    <event_count>
    <head_hash>
    <signed_at, RFC 3339 UTC>

The public key travels with the head (so a copy stands alone); what makes it trusted is
that it equals the key the server publishes, which the verifier compares.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dpgate_server.ledger.model import ChainHead
from dpgate_server.signed_heads.keys import public_key_bytes

FORMAT = "dpgate-signed-head/1"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
MAX_JSON_CHARS = 4096
"""A signed head is a few hundred characters; anything longer is refused unread."""


class SignedHeadFormatError(ValueError):
    """The text is not a signed head of this format."""


@dataclass(frozen=True, slots=True)
class SignedHead:
    """A head, when it was signed, the signer's public key and the signature (hex)."""

    event_count: int
    head_hash: str
    signed_at: dt.datetime
    public_key: str
    signature: str

    @property
    def head(self) -> ChainHead:
        """The chain head it vouches for."""
        return ChainHead(count=self.event_count, hash=self.head_hash)

    @property
    def key_id(self) -> str:
        """A short name of the signing key: the first 16 hex of SHA-256 of the public key."""
        return hashlib.sha256(bytes.fromhex(self.public_key)).hexdigest()[:16]

    def signed_text(self) -> bytes:
        """The exact bytes the signature covers."""
        return signed_text(self.event_count, self.head_hash, self.signed_at)

    def signature_matches(self, trusted_public_key: str) -> bool:
        """Whether the head carries `trusted_public_key` (hex) and its signature checks out."""
        if self.public_key != trusted_public_key:
            return False
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.public_key))
        try:
            key.verify(bytes.fromhex(self.signature), self.signed_text())
        except InvalidSignature:
            return False
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "event_count": self.event_count,
            "head_hash": self.head_hash,
            "signed_at": _time_text(self.signed_at),
            "key_id": self.key_id,
            "public_key": self.public_key,
            "signature": self.signature,
        }

    def to_json(self) -> str:
        """The published form: one JSON object, keys sorted."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=1) + "\n"

    @staticmethod
    def from_json(text: str) -> SignedHead:
        """Parse a published head (its signature is not checked here).

        Raises:
            SignedHeadFormatError: not JSON, another format, or a field of the wrong shape.
        """
        if len(text) > MAX_JSON_CHARS:
            raise SignedHeadFormatError(f"a signed head is under {MAX_JSON_CHARS} characters")
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SignedHeadFormatError(f"not JSON: {exc}") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise SignedHeadFormatError(f"not a signed head: expected format {FORMAT!r}")
        return SignedHead.from_fields(
            raw.get("event_count"),
            raw.get("head_hash"),
            raw.get("signed_at"),
            raw.get("public_key"),
            raw.get("signature"),
        )

    @staticmethod
    def from_fields(
        event_count: object,
        head_hash: object,
        signed_at: object,
        public_key: object,
        signature: object,
    ) -> SignedHead:
        """Check each field's shape and build the head (used for JSON and the RPC)."""
        if isinstance(event_count, bool) or not isinstance(event_count, int) or event_count < 0:
            raise SignedHeadFormatError("event_count must be a non-negative integer")
        if not isinstance(head_hash, str) or not _HEX64.fullmatch(head_hash):
            raise SignedHeadFormatError("head_hash must be 64 lowercase hex characters")
        if not isinstance(public_key, str) or not _HEX64.fullmatch(public_key):
            raise SignedHeadFormatError("public_key must be 64 lowercase hex characters")
        if not isinstance(signature, str) or not _HEX128.fullmatch(signature):
            raise SignedHeadFormatError("signature must be 128 lowercase hex characters")
        if not isinstance(signed_at, str):
            raise SignedHeadFormatError("signed_at must be an RFC 3339 time")
        try:
            at = dt.datetime.fromisoformat(signed_at)
        except ValueError:
            raise SignedHeadFormatError("signed_at must be an RFC 3339 time") from None
        if at.tzinfo is None:
            raise SignedHeadFormatError("signed_at must carry its time zone (UTC)")
        return SignedHead(event_count, head_hash, at.astimezone(dt.UTC), public_key, signature)


def signed_text(event_count: int, head_hash: str, signed_at: dt.datetime) -> bytes:
    return f"{FORMAT}\n{event_count}\n{head_hash}\n{_time_text(signed_at)}\n".encode()


def sign_head(key: Ed25519PrivateKey, head: ChainHead, at: dt.datetime) -> SignedHead:
    """Sign `head` as of `at` (kept to the microsecond the text form carries)."""
    at = at.astimezone(dt.UTC)
    signature = key.sign(signed_text(head.count, head.hash, at))
    return SignedHead(head.count, head.hash, at, public_key_bytes(key).hex(), signature.hex())


def _time_text(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="microseconds")
