"""Canonical JSON and its SHA-256: one definition for everything that is hashed or compared.

Canonical means sorted keys and no whitespace, so equal values give equal text and equal
digests whichever process wrote them. Three things depend on it and must never change
their bytes: the audit chain's event hashes (`ledger.chain`), a query's release key
(`queries.model.CanonicalQuery`) and the audited text of a request (`api`). The audit
chain and requests keep non-ASCII characters as they are (`ascii_only=False`); the release
key format escapes them (`ascii_only=True`), fixed by its format version.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any, *, ascii_only: bool = False) -> str:
    """`value` as canonical JSON: keys sorted, no whitespace.

    >>> canonical_json({"b": 1, "a": ["é", None]})
    '{"a":["é",null],"b":1}'
    >>> canonical_json({"a": "é"}, ascii_only=True)
    '{"a":"\\\\u00e9"}'
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii_only)


def sha256_hex(text: str) -> str:
    """Hex SHA-256 of `text` encoded as UTF-8.

    >>> sha256_hex("")[:16]
    'e3b0c44298fc1c14'
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_digest(value: Any, *, ascii_only: bool = False) -> str:
    """Hex SHA-256 of `value`'s canonical JSON."""
    return sha256_hex(canonical_json(value, ascii_only=ascii_only))
