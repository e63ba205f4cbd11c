"""Public value types of `AdminClient` and `AuditClient`: frozen dataclasses, exact amounts."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Requester:
    """A person or organisation that may be issued tokens."""

    requester_id: str
    name: str
    organisation: str
    purpose: str
    """The purpose or data-sharing agreement reference under which they ask."""
    enabled: bool


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token. `token` is the secret, shown this once: hand it over, do not store it.

    It is left out of `repr`, so printing the object (or a log of it) does not leak it.
    """

    token_id: str
    """Public id, for revocation and the audit log."""
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class DatasetCap:
    """A dataset's global cap across all requesters, and what all of them have spent."""

    dataset_id: str
    accounting: str
    """"pure_dp" (amounts are epsilon) or "zcdp" (amounts are rho)."""
    cap: Decimal
    spent: Decimal


@dataclass(frozen=True, slots=True)
class DatasetBudget:
    """A dataset's cap, what is allocated and spent against it, and its sharing setting."""

    dataset_id: str
    version: str
    """The current version."""
    accounting: str
    """"pure_dp" (amounts are epsilon) or "zcdp" (amounts are rho)."""
    cap: Decimal
    spent: Decimal
    allocated: Decimal
    """The sum of every allocation on the dataset (above the cap only if forced)."""
    publish_spent: Decimal
    """What publishing spent from the cap (bias figures, bounds chosen privately); included
    in `spent`. The cap must fund `allocated` beside it (else only with force)."""
    allocation_count: int
    release_count: int
    share_releases: bool
    """Whether a release is served free to another requester asking the identical query."""


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A token's record: never its secret (the server does not have it)."""

    token_id: str
    requester_id: str
    role: str
    practice_codes: tuple[str, ...]
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class AuditHead:
    """The audit chain's length and last hash: keep it, and later `verify` against it."""

    event_count: int
    head_hash: str


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One link of the audit chain (empty strings where the server recorded nothing)."""

    sequence: int
    occurred_at: dt.datetime
    requester_id: str
    token_id: str
    role: str
    rpc: str
    dataset_id: str
    query_text: str
    """The canonical query, or the canonical administrative request."""
    detail: str
    """What happened: "charged", the change made, or a refusal's reason."""
    cost: Decimal
    """Epsilon or rho charged (see `accounting`); 0 when nothing was."""
    accounting: str
    """"pure_dp", "zcdp", or "" for an event on no dataset."""
    outcome: str
    """"answered", "refused", "invalid", "denied", "unauthenticated" or "failed"."""
    release_id: str
    request_id: str
    previous_hash: str
    event_hash: str


@dataclass(frozen=True, slots=True)
class ChainVerification:
    """The outcome of checking the audit chain's hashes and links."""

    valid: bool
    first_bad_sequence: int | None
    """The first event that fails a check, or None when the chain is valid."""
    problem: str
    """What is wrong, in words ("" when valid)."""
    head: AuditHead


@dataclass(frozen=True, slots=True)
class PublishStep:
    """How far a publish has got (`AdminClient.publish_with_progress`); never a row count.

    Stages run in order: "reading", "bounding", "writing", "verifying". Within a stage
    `done` never decreases and ends at `total`.
    """

    stage: str
    done: int
    """Units of the stage done."""
    total: int
    """Units the stage has."""
    unit: str
    """What a unit is: "practices" (reading, writing), "buckets" (bounding) or "checks"."""
    fraction: float
    """The server's estimate of the whole publish done, 0 to 1."""
    elapsed_seconds: float
    """Seconds since the publish started."""
    seconds_left: float | None
    """The server's estimate of the time left for the whole publish (None: not yet known)."""
