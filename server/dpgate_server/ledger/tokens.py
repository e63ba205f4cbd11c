"""Token secrets: minted with 256+ random bits, stored only as a SHA-256 digest.

A token is shown once, when issued. The ledger keeps `sha256(token)` and looks it up by that
digest; a stolen ledger file therefore yields no usable token (the secrets have 256 bits of
entropy, so the unsalted hash cannot be reversed by guessing).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "dpg_"  # noqa: S105 - a public marker, not a secret
"""Marks dpgate tokens so that secret scanners and people recognise them."""

TOKEN_BYTES = 32
"""Random bytes in a token: 256 bits."""


def mint_token() -> str:
    """A new random token secret (prefix + 43 url-safe characters = 256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def mint_token_id() -> str:
    """A public token id, safe to log and show in listings."""
    return "tok_" + secrets.token_hex(8)


def hash_token(token: str) -> str:
    """The stored form of a token: hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, stored_hash: str) -> bool:
    """Constant-time check that `token` hashes to `stored_hash`."""
    return hmac.compare_digest(hash_token(token), stored_hash)
