"""The ledger's values: immutable records of who may spend what, and what was released.

All amounts are integers of ledger units (1e-9 epsilon or rho, see `dpgate_server.spend`);
all times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from dpgate_server.vocabulary.accounting import Accounting


class Role(StrEnum):
    """The one role a token carries (DESIGN.md, "Roles")."""

    ANALYST = "analyst"
    ADMIN = "admin"
    AUDITOR = "auditor"
    PROVIDER = "provider"


class Outcome(StrEnum):
    """How a request ended, as written in the audit chain."""

    ANSWERED = "answered"
    """A result left the server (charged, a free repeat, or a successful admin change)."""
    REFUSED = "refused"
    """A limit would have been exceeded (the budget, or the largest message the server
    accepts: detail MESSAGE_TOO_LARGE); nothing was charged."""
    INVALID = "invalid"
    """Bad input (unknown column, reused idempotency key, ...); nothing was charged."""
    DENIED = "denied"
    """Authenticated, but the role may not call this RPC."""
    UNAUTHENTICATED = "unauthenticated"
    """No valid token; such events are aggregated per source and minute."""
    FAILED = "failed"
    """An unexpected server error; nothing was charged."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as established by `Ledger.authenticate`.

    Attributes:
        requester_id: the requester the token belongs to.
        role: the token's single role.
        token_id: the token's public id (never the secret).
        practice_codes: for provider tokens, the practices it may act for; else empty.
    """

    requester_id: str
    role: Role
    token_id: str
    practice_codes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What the audit chain records about the request that caused a ledger call.

    Attributes:
        request_id: the server's id for this request (also in logs).
        rpc: the RPC name, e.g. "RunQuery".
        query_text: the canonical query, or a canonical description of an admin change.
        principal: the authenticated caller, or None for a local operator (CLI).
        source: the peer (an IP address without port); used to aggregate
            unauthenticated requests.
    """

    request_id: str
    rpc: str
    query_text: str = ""
    principal: Principal | None = None
    source: str = ""


@dataclass(frozen=True, slots=True)
class Requester:
    """A person or team that asks questions, identified by the agreement that allows it."""

    requester_id: str
    name: str
    organisation: str
    agreement: str
    """The purpose or data-sharing agreement reference under which they ask."""
    enabled: bool
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token's public record (the secret is never stored, only its SHA-256)."""

    token_id: str
    requester_id: str
    role: Role
    practice_codes: frozenset[str]
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None

    def is_valid_at(self, now: dt.datetime) -> bool:
        """Not revoked and not expired at `now`."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A newly issued token: the only time the secret exists outside the caller's hands."""

    token: str
    info: TokenInfo


@dataclass(frozen=True, slots=True)
class Dataset:
    """The ledger's view of a dataset: its global cap and what all requesters spent.

    Attributes:
        dataset_id: the dataset's id (as in the dataset store).
        accounting: pure DP (units of epsilon) or zCDP (units of rho).
        cap_units: the most all requesters together may ever spend.
        spent_units: what all requesters together have spent.
        share_releases: whether a release made for one requester is served free to
            another asking the identical query (default yes; it is post-processing).
    """

    dataset_id: str
    accounting: Accounting
    cap_units: int
    spent_units: int
    share_releases: bool

    @property
    def cap_remaining_units(self) -> int:
        """What may still be spent on this dataset by anyone."""
        return max(0, self.cap_units - self.spent_units)


@dataclass(frozen=True, slots=True)
class CapChange:
    """A change of a dataset's cap, with the reason an administrator gave."""

    dataset_id: str
    cap_before_units: int
    cap_after_units: int
    reason: str
    changed_by: str | None
    """The token id of the administrator, or None for a local operator."""
    changed_at: dt.datetime


NOT_RECORDED = "not recorded"
"""The purpose and agreement of allocations granted before purposes were required."""


@dataclass(frozen=True, slots=True)
class Allocation:
    """One requester's budget on one dataset, and why it was given.

    Attributes:
        purpose: what the budget is for, in the grantor's words (public).
        agreement: the data-sharing agreement (or other instrument) it is given under
            (public).
    """

    requester_id: str
    dataset_id: str
    granted_units: int
    spent_units: int
    expires_at: dt.datetime | None
    purpose: str = NOT_RECORDED
    agreement: str = NOT_RECORDED

    def remaining_at(self, now: dt.datetime) -> int:
        """What is left of this allocation at `now` (zero once expired)."""
        if self.expires_at is not None and now >= self.expires_at:
            return 0
        return max(0, self.granted_units - self.spent_units)


@dataclass(frozen=True, slots=True)
class Budget:
    """What a requester may still spend on a dataset, and why.

    `remaining_units` is the smaller of the allocation's remainder and the cap's.
    """

    requester_id: str
    dataset_id: str
    granted_units: int
    spent_units: int
    expires_at: dt.datetime | None
    allocation_remaining_units: int
    cap_remaining_units: int

    @property
    def remaining_units(self) -> int:
        """What the next debit may cost at most."""
        return min(self.allocation_remaining_units, self.cap_remaining_units)


@dataclass(frozen=True, slots=True)
class StoredRelease:
    """A stored noisy answer, served again for free to identical queries.

    The ledger's record of a release: who paid, what, when. The answer itself is the
    engine's `queries.model.Release`, kept here as its opaque bytes (`payload`).

    Attributes:
        release_id: public id, returned with the answer.
        release_key: the engine's canonical key of the query.
        dataset_id: the dataset it was computed on.
        requester_id: the requester who paid for it.
        cost_units: what it cost when first released.
        payload: the engine's serialized answer; opaque to the ledger.
        created_at: when it was recorded.
        request_id: the request that created it.
        dataset_version: the dataset version it was computed on (None: not given, or
            recorded before the ledger kept it; the payload still names it).
    """

    release_id: str
    release_key: str
    dataset_id: str
    requester_id: str
    cost_units: int
    payload: bytes
    created_at: dt.datetime
    request_id: str
    dataset_version: str | None = None


@dataclass(frozen=True, slots=True)
class DerivedRecord:
    """A derived answer given to a requester: cells of a stored release added up, free.

    Only the record is kept (who received what, from which release): the answer is
    recomputed from its source, which never changes.

    Attributes:
        derived_id: the id the answer was shown under (the same source and question give
            the same id; recorded once per requester).
        requester_id: who received it.
        dataset_id: the dataset.
        source_release_id: the release whose cells were added up.
        dataset_version: the version both are on.
        canonical_query: the question answered, in canonical JSON.
        created_at: when it was first given to this requester.
        request_id: the request that first received it.
    """

    derived_id: str
    requester_id: str
    dataset_id: str
    source_release_id: str
    dataset_version: str
    canonical_query: str
    created_at: dt.datetime
    request_id: str


@dataclass(frozen=True, slots=True)
class PublishSpend:
    """A privacy spend charged to a dataset's cap by publishing, not by a requester.

    Publishing may release DP statistics of the version it builds (the bias figure: how
    many patients lost rows to each contribution bound; a bound chosen by a DP quantile).
    Their spend is declared by an administrator setting, charged to the dataset's global
    cap (no requester's allocation pays), recorded here and audited, once per release.

    Attributes:
        spend_id: the record's id ("pub_" and random hex).
        dataset_id: the dataset whose cap paid.
        dataset_version: the version the spend was made for (the name its publish gives it).
        purpose: what was released, e.g. "bias_figure".
        cost_units: the declared spend, in ledger units (positive).
        created_at: when it was charged.
        request_id: the request (the publish) that charged it.
    """

    spend_id: str
    dataset_id: str
    dataset_version: str
    purpose: str
    cost_units: int
    created_at: dt.datetime
    request_id: str


@dataclass(frozen=True, slots=True)
class PublishCharge:
    """What `Ledger.charge_publish_spend` decided: charged (`spend`), or not and why.

    A publish goes on either way: a statistic the cap cannot pay (or past the per-version
    limit) is simply not released, and `refusal` says so in words for the operator.
    """

    spend: PublishSpend | None
    refusal: str = ""
    remaining_units: int = 0
    """The dataset cap's remainder after the decision."""

    @property
    def charged(self) -> bool:
        return self.spend is not None


@dataclass(frozen=True, slots=True)
class ReleasePage:
    """One page of a requester's releases and derived answers, newest first.

    Attributes:
        releases: at most the page size, newest first.
        next_after: the token to pass as `after` for the next page; None when nothing
            older remains.
    """

    releases: tuple[StoredRelease | DerivedRecord, ...]
    next_after: str | None


@dataclass(frozen=True, slots=True)
class DebitResult:
    """The outcome of a successful `Ledger.debit`.

    A retry with an idempotency key already used is told again what its first call was
    told (the first call's answer may have been lost): its `charged_units`,
    `remaining_units` (as it was then) and `repeat`, though the retry itself charges
    nothing. The caller always returns `release.payload`, never its own freshly computed
    answer: for a repeat or a retry they differ.

    Attributes:
        release: the release to return (new, or the earlier one for a repeat or retry).
        charged_units: what this call, or the first call a retry replays, charged (0 for
            a repeat).
        remaining_units: the requester's remaining budget on the dataset afterwards.
        repeat: True when the answer is an identical query released (perhaps
            concurrently) before, served free.
    """

    release: StoredRelease
    charged_units: int
    remaining_units: int
    repeat: bool


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One link of the audit chain. `event_hash` covers every other field."""

    seq: int
    at: dt.datetime
    requester_id: str | None
    token_id: str | None
    role: str | None
    rpc: str
    query_text: str
    dataset_id: str | None
    cost_units: int
    outcome: Outcome
    release_id: str | None
    request_id: str
    detail: str
    prev_hash: str
    event_hash: str


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The chain's length and last hash; publish it so later rewrites are detectable."""

    count: int
    hash: str


@dataclass(frozen=True, slots=True)
class ChainVerification:
    """The result of checking the audit chain.

    Attributes:
        ok: every check passed.
        checked: how many events were read.
        head: the head computed from the events read.
        first_bad_seq: the first event that fails a check (a missing event is named
            by the sequence number it should have had), or None.
        problem: what is wrong, in words, or None.
    """

    ok: bool
    checked: int
    head: ChainHead
    first_bad_seq: int | None = None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class SpendingLine:
    """One row of the spending report: a requester's allocation on a dataset."""

    requester_id: str
    name: str
    organisation: str
    dataset_id: str
    granted_units: int
    spent_units: int
    expires_at: dt.datetime | None
    releases: int
    purpose: str = NOT_RECORDED
    agreement: str = NOT_RECORDED
    remaining_units: int = 0
    """What may still be spent from the allocation now (zero once it has expired)."""
    last_spend_at: dt.datetime | None = None
    """When the requester's latest release on the dataset was made; None if none yet."""


@dataclass(frozen=True, slots=True)
class DatasetSpending:
    """A dataset's totals in the spending report."""

    dataset_id: str
    accounting: Accounting
    cap_units: int
    spent_units: int
    releases: int
    allocated_units: int = 0
    """The sum of every allocation granted on the dataset (may exceed the cap if forced)."""
    publish_spent_units: int = 0
    """What publishing spent from the cap (the bias figure, bounds chosen privately);
    included in spent_units. A cap below the allocations plus this needs `force`."""
    allocations: int = 0
    """How many requesters hold an allocation on it."""
    share_releases: bool = True
    """Whether a release is served free to another requester asking the identical query."""


@dataclass(frozen=True, slots=True)
class SpendingReport:
    """Every allocation and every dataset's totals, for administrators."""

    lines: tuple[SpendingLine, ...]
    datasets: tuple[DatasetSpending, ...]


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """Whether the stored balances equal the sum of the stored releases."""

    ok: bool
    problems: tuple[str, ...]
