"""Administrative operations: requesters, tokens, datasets and caps, allocations, reports.

Every change runs in one write transaction together with its audit event (outcome
`answered`, a canonical description of the change in `detail`), so the chain shows who
granted what, when. A change that fails raises and records nothing; the API layer then
records the failed request with `Ledger.record_event`.

The cap bounds what everyone together spends, publishing's own spends included (the bias
figure, bounds chosen privately: Ledger.charge_publish_spend). Allocations adding up to more
than the cap leaves after those promise more than can be spent, so a cap below their sum plus
what publishing has spent is refused unless the administrator forces it (over-subscription
on purpose).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from dpgate_server.ledger._audit import append_event
from dpgate_server.ledger._time import format_optional, utc_now
from dpgate_server.ledger.errors import (
    AllocationBelowSpent,
    AllocationNotFound,
    AlreadyExists,
    CapBelowAllocated,
    CapBelowSpent,
    ExpiryInThePast,
    InvalidAmount,
    InvalidTokenRequest,
    MissingPurpose,
    MissingReason,
    RequesterNotFound,
    SelfGrantForbidden,
    TokenNotFound,
)
from dpgate_server.ledger.model import (
    Allocation,
    CapChange,
    Dataset,
    DatasetSpending,
    IssuedToken,
    Outcome,
    Requester,
    RequestInfo,
    Role,
    SpendingLine,
    SpendingReport,
    StoredRelease,
    TokenInfo,
)
from dpgate_server.ledger.storage import LedgerStorage, StorageTransaction
from dpgate_server.ledger.tokens import hash_token, mint_token, mint_token_id
from dpgate_server.ledger.unauthenticated import (
    UnauthenticatedCounter,
    UnauthenticatedPolicy,
    writing,
)
from dpgate_server.spend import describe
from dpgate_server.vocabulary.accounting import Accounting
from dpgate_server.vocabulary.errors import DatasetNotFoundError


class LedgerAdmin:
    """The budget administrator's operations (reached as `Ledger.admin`)."""

    def __init__(
        self,
        storage: LedgerStorage,
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        unauthenticated: UnauthenticatedCounter | None = None,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self._unauthenticated = unauthenticated or UnauthenticatedCounter(UnauthenticatedPolicy())

    # requesters

    def create_requester(
        self,
        requester_id: str,
        *,
        name: str,
        organisation: str,
        agreement: str,
        request: RequestInfo,
    ) -> Requester:
        """Register a requester (enabled) under the agreement that allows them to ask."""
        if not requester_id:
            raise ValueError("a requester id cannot be empty")
        with self._write(request) as (tx, now, audit):
            requester = Requester(requester_id, name, organisation, agreement, True, now)
            tx.insert_requester(requester)
            audit(f"create requester {requester_id} ({organisation}; agreement {agreement})")
        return requester

    def set_requester_enabled(
        self, requester_id: str, enabled: bool, *, request: RequestInfo
    ) -> Requester:
        """Enable or disable a requester; a disabled one cannot authenticate or spend."""
        with self._write(request) as (tx, _, audit):
            requester = _requester(tx, requester_id)
            tx.set_requester_enabled(requester_id, enabled)
            audit(f"{'enable' if enabled else 'disable'} requester {requester_id}")
        return replace(requester, enabled=enabled)

    def list_requesters(self) -> list[Requester]:
        """Every requester, by id."""
        with self._storage.read() as tx:
            return tx.list_requesters()

    # tokens

    def issue_token(
        self,
        requester_id: str,
        role: Role,
        *,
        request: RequestInfo,
        expires_at: dt.datetime | None = None,
        practice_codes: Iterable[str] = (),
    ) -> IssuedToken:
        """Issue a token with exactly one role; its secret is in the result and nowhere else.

        Raises:
            InvalidTokenRequest: a provider token without practice codes, or practice
                codes on any other role.
            ExpiryInThePast: `expires_at` is not after now.
        """
        codes = frozenset(practice_codes)
        if role is Role.PROVIDER and not codes:
            raise InvalidTokenRequest("a provider token must name its practice codes")
        if role is not Role.PROVIDER and codes:
            raise InvalidTokenRequest("only provider tokens are bound to practice codes")
        secret = mint_token()
        with self._write(request) as (tx, now, audit):
            _check_expiry(expires_at, now, "a token")
            _requester(tx, requester_id)
            info = TokenInfo(mint_token_id(), requester_id, role, codes, now, expires_at, None)
            tx.insert_token(info, hash_token(secret))
            audit(
                f"issue {role.value} token {info.token_id} to {requester_id}"
                f" expires {format_optional(expires_at)} practices {sorted(codes)}"
            )
        return IssuedToken(token=secret, info=info)

    def revoke_token(self, token_id: str, *, request: RequestInfo) -> TokenInfo:
        """Revoke a token from now on (idempotent: the first revocation time is kept)."""
        with self._write(request) as (tx, now, audit):
            info = tx.get_token(token_id)
            if info is None:
                raise TokenNotFound(f"no token {token_id!r}")
            if info.revoked_at is None:
                tx.set_token_revoked(token_id, now)
                info = replace(info, revoked_at=now)
            audit(f"revoke token {token_id}")
        return info

    def list_tokens(self, requester_id: str | None = None) -> list[TokenInfo]:
        """Token records (never secrets, never hashes), optionally of one requester."""
        with self._storage.read() as tx:
            return tx.list_tokens(requester_id)

    # datasets and caps

    def create_dataset(
        self,
        dataset_id: str,
        *,
        accounting: Accounting,
        cap_units: int,
        reason: str,
        request: RequestInfo,
        share_releases: bool = True,
    ) -> Dataset:
        """Register a dataset's global cap (the initial cap is recorded as a change)."""
        _check_amount(cap_units, "a cap", allow_zero=True)
        _check_reason(reason)
        with self._write(request) as (tx, now, audit):
            dataset = Dataset(dataset_id, accounting, cap_units, 0, share_releases)
            tx.insert_dataset(dataset)
            tx.insert_cap_change(CapChange(dataset_id, 0, cap_units, reason, _actor(request), now))
            audit(f"create dataset {dataset_id} cap {describe(cap_units, accounting)}: {reason}")
        return dataset

    def set_dataset_cap(
        self,
        dataset_id: str,
        cap_units: int,
        *,
        reason: str,
        request: RequestInfo,
        force: bool = False,
    ) -> CapChange:
        """Raise or lower a dataset's cap, with the reason recorded.

        Raises:
            CapBelowSpent: the new cap is below what has been spent already (never allowed).
            CapBelowAllocated: the new cap is below the sum of the dataset's allocations
                plus what publishing has spent from it, and `force` is not set.
            MissingReason: no reason was given.
        """
        _check_amount(cap_units, "a cap", allow_zero=True)
        _check_reason(reason)
        with self._write(request) as (tx, now, audit):
            dataset = _dataset(tx, dataset_id)
            amount = functools.partial(describe, accounting=dataset.accounting)
            if cap_units < dataset.spent_units:
                raise CapBelowSpent(
                    f"{dataset_id} has spent {amount(dataset.spent_units)}; "
                    f"the cap cannot go down to {amount(cap_units)}"
                )
            allocated = sum(
                a.granted_units for a in tx.list_allocations() if a.dataset_id == dataset_id
            )
            # Publishing's spends (the bias figure, bounds chosen privately) came out of the
            # cap too, beside the allocations (a requester's releases are inside theirs).
            published = sum(s.cost_units for s in tx.list_publish_spends(dataset_id))
            committed = allocated + published
            if cap_units < committed and not force:
                raise CapBelowAllocated(
                    _cap_below_allocated(dataset_id, cap_units, allocated, published, amount)
                )
            change = CapChange(
                dataset_id, dataset.cap_units, cap_units, reason, _actor(request), now
            )
            tx.set_dataset_cap(dataset_id, cap_units)
            tx.insert_cap_change(change)
            forced = ""
            if cap_units < committed:
                spent_by_publishing = (
                    f" and {amount(published)} spent by publishing" if published else ""
                )
                forced = f" (forced below {amount(allocated)} allocated{spent_by_publishing})"
            audit(
                f"set cap of {dataset_id} from {amount(dataset.cap_units)} to {amount(cap_units)}"
                f"{forced}: {reason}"
            )
        return change

    def set_release_sharing(
        self, dataset_id: str, share_releases: bool, *, request: RequestInfo
    ) -> Dataset:
        """Whether a release is served free to other requesters asking the same query."""
        with self._write(request) as (tx, _, audit):
            dataset = _dataset(tx, dataset_id)
            tx.set_dataset_sharing(dataset_id, share_releases)
            audit(f"set release sharing of {dataset_id} to {share_releases}")
        return replace(dataset, share_releases=share_releases)

    def list_datasets(self) -> list[Dataset]:
        """Every dataset the ledger knows, with cap and spent."""
        with self._storage.read() as tx:
            return tx.list_datasets()

    def cap_history(self, dataset_id: str) -> list[CapChange]:
        """Every change of a dataset's cap, oldest first, with reasons."""
        with self._storage.read() as tx:
            _dataset(tx, dataset_id)
            return tx.list_cap_changes(dataset_id)

    # allocations

    def grant_allocation(
        self,
        requester_id: str,
        dataset_id: str,
        granted_units: int,
        *,
        request: RequestInfo,
        purpose: str,
        agreement: str,
        expires_at: dt.datetime | None = None,
    ) -> Allocation:
        """Create a requester's allocation on a dataset (use top up / reduce afterwards).

        `purpose` (what the budget is for) and `agreement` (the data-sharing agreement or
        other instrument it is given under) are required and public: the transparency page
        shows them beside every release paid from this allocation.

        Raises:
            AlreadyExists: the allocation exists (checked first: a top-up needs no purpose).
            MissingPurpose: the purpose or the agreement is empty.
            SelfGrantForbidden: the administrator is granting to their own requester.
            ExpiryInThePast: `expires_at` is not after now.
        """
        _check_amount(granted_units, "a grant", allow_zero=True)
        _check_not_self(request, requester_id)
        with self._write(request) as (tx, now, audit):
            _check_expiry(expires_at, now, "an allocation")
            _requester(tx, requester_id)
            accounting = _dataset(tx, dataset_id).accounting
            if tx.get_allocation(requester_id, dataset_id) is not None:
                raise AlreadyExists(f"{requester_id} already has an allocation on {dataset_id}")
            purpose, agreement = _check_purpose(purpose, agreement)
            allocation = Allocation(
                requester_id, dataset_id, granted_units, 0, expires_at, purpose, agreement
            )
            tx.put_allocation(allocation)
            audit(
                f"grant {describe(granted_units, accounting)} on {dataset_id} to {requester_id}"
                f" expires {format_optional(expires_at)}"
                f" purpose {purpose!r} agreement {agreement!r}"
            )
        return allocation

    def grant_or_top_up(
        self,
        requester_id: str,
        dataset_id: str,
        units: int,
        *,
        request: RequestInfo,
        purpose: str = "",
        agreement: str = "",
        expires_at: dt.datetime | None = None,
    ) -> Allocation:
        """Create the allocation, or top it up by `units` if it exists, in one transaction.

        A new allocation needs `purpose` and `agreement` (see `grant_allocation`); a top-up
        keeps the ones it was granted with. On a top-up a given `expires_at` replaces the
        allocation's expiry and None leaves it as it was; a top-up of zero with an expiry
        changes only the expiry. Either way the change is one audit event: no reader ever
        sees the top-up without its new expiry, and a refusal changes nothing.

        Raises:
            InvalidAmount: a negative amount, or zero on an existing allocation without a
                new expiry (it would change nothing).
            MissingPurpose: a new allocation without its purpose or agreement.
            SelfGrantForbidden: the administrator is granting to their own requester.
            ExpiryInThePast: `expires_at` is not after now.
        """
        _check_amount(units, "a grant", allow_zero=True)
        _check_not_self(request, requester_id)
        with self._write(request) as (tx, now, audit):
            _check_expiry(expires_at, now, "an allocation")
            _requester(tx, requester_id)
            amount = functools.partial(describe, accounting=_dataset(tx, dataset_id).accounting)
            existing = tx.get_allocation(requester_id, dataset_id)
            if existing is None:
                purpose, agreement = _check_purpose(purpose, agreement)
                allocation = Allocation(
                    requester_id, dataset_id, units, 0, expires_at, purpose, agreement
                )
                tx.put_allocation(allocation)
                audit(
                    f"grant {amount(units)} on {dataset_id} to {requester_id}"
                    f" expires {format_optional(expires_at)}"
                    f" purpose {purpose!r} agreement {agreement!r}"
                )
                return allocation
            if units == 0 and expires_at is None:
                raise InvalidAmount(
                    "a top-up of zero changes nothing: give an amount, or an expiry to change"
                    " only the expiry"
                )
            allocation = replace(
                existing,
                granted_units=existing.granted_units + units,
                expires_at=existing.expires_at if expires_at is None else expires_at,
            )
            tx.put_allocation(allocation)
            audit(
                f"set expiry of {requester_id} on {dataset_id} to {format_optional(expires_at)}"
                if units == 0
                else f"top up {requester_id} on {dataset_id} by {amount(units)}"
                f" to {amount(allocation.granted_units)}"
                f" expires {format_optional(allocation.expires_at)}"
            )
        return allocation

    def top_up_allocation(
        self, requester_id: str, dataset_id: str, units: int, *, request: RequestInfo
    ) -> Allocation:
        """Add `units` to an allocation."""
        _check_amount(units, "a top-up", allow_zero=False)
        _check_not_self(request, requester_id)
        with self._write(request) as (tx, _, audit):
            allocation = _allocation(tx, requester_id, dataset_id)
            amount = functools.partial(describe, accounting=_dataset(tx, dataset_id).accounting)
            updated = replace(allocation, granted_units=allocation.granted_units + units)
            tx.put_allocation(updated)
            audit(
                f"top up {requester_id} on {dataset_id} by {amount(units)}"
                f" to {amount(updated.granted_units)}"
            )
        return updated

    def reduce_allocation(
        self, requester_id: str, dataset_id: str, units: int, *, request: RequestInfo
    ) -> Allocation:
        """Take `units` back from an allocation, never below what was spent.

        Raises:
            AllocationBelowSpent: the reduced grant would be below the spent amount.
        """
        _check_amount(units, "a reduction", allow_zero=False)
        with self._write(request) as (tx, _, audit):
            allocation = _allocation(tx, requester_id, dataset_id)
            amount = functools.partial(describe, accounting=_dataset(tx, dataset_id).accounting)
            granted = allocation.granted_units - units
            if granted < allocation.spent_units:
                raise AllocationBelowSpent(
                    f"{requester_id} has spent {amount(allocation.spent_units)} on {dataset_id};"
                    f" the grant cannot go down to {amount(granted)}"
                )
            updated = replace(allocation, granted_units=granted)
            tx.put_allocation(updated)
            audit(f"reduce {requester_id} on {dataset_id} by {amount(units)} to {amount(granted)}")
        return updated

    def set_allocation_expiry(
        self,
        requester_id: str,
        dataset_id: str,
        expires_at: dt.datetime | None,
        *,
        request: RequestInfo,
    ) -> Allocation:
        """Set or clear the time after which the allocation can no longer be spent.

        Raises:
            ExpiryInThePast: `expires_at` is not after now (to stop spending now, reduce the
                allocation to what is spent, or disable the requester).
        """
        with self._write(request) as (tx, now, audit):
            _check_expiry(expires_at, now, "an allocation")
            updated = replace(_allocation(tx, requester_id, dataset_id), expires_at=expires_at)
            tx.put_allocation(updated)
            audit(f"set expiry of {requester_id} on {dataset_id} to {format_optional(expires_at)}")
        return updated

    # reports

    def spending_report(self) -> SpendingReport:
        """Every allocation with its spending, and every dataset's totals."""
        now = self._clock()
        with self._storage.read() as tx:
            requesters = {r.requester_id: r for r in tx.list_requesters()}
            released = {(t.requester_id, t.dataset_id): t for t in tx.release_totals()}
            allocations = tx.list_allocations()
            datasets = tx.list_datasets()
            published: dict[str, int] = {}
            for spend in tx.list_publish_spends(None):
                published[spend.dataset_id] = published.get(spend.dataset_id, 0) + spend.cost_units
        lines = tuple(
            SpendingLine(
                requester_id=a.requester_id,
                name=requesters[a.requester_id].name,
                organisation=requesters[a.requester_id].organisation,
                dataset_id=a.dataset_id,
                granted_units=a.granted_units,
                spent_units=a.spent_units,
                expires_at=a.expires_at,
                releases=total.releases if total else 0,
                purpose=a.purpose,
                agreement=a.agreement,
                remaining_units=a.remaining_at(now),
                last_spend_at=total.last_released_at if total else None,
            )
            for a in allocations
            for total in (released.get((a.requester_id, a.dataset_id)),)
        )
        totals = tuple(
            DatasetSpending(
                dataset_id=d.dataset_id,
                accounting=d.accounting,
                cap_units=d.cap_units,
                spent_units=d.spent_units,
                releases=sum(t.releases for t in released.values() if t.dataset_id == d.dataset_id),
                allocated_units=sum(
                    a.granted_units for a in allocations if a.dataset_id == d.dataset_id
                ),
                allocations=sum(1 for a in allocations if a.dataset_id == d.dataset_id),
                publish_spent_units=published.get(d.dataset_id, 0),
                share_releases=d.share_releases,
            )
            for d in datasets
        )
        return SpendingReport(lines=lines, datasets=totals)

    def list_releases(
        self, requester_id: str | None = None, dataset_id: str | None = None
    ) -> list[StoredRelease]:
        """Releases, optionally of one requester and/or one dataset, oldest first."""
        with self._storage.read() as tx:
            return tx.list_releases(requester_id, dataset_id)

    @contextmanager
    def _write(
        self, request: RequestInfo
    ) -> Iterator[tuple[StorageTransaction, dt.datetime, Callable[[str], None]]]:
        with writing(self._storage, self._unauthenticated, self._clock) as (tx, now):

            def audit(detail: str) -> None:
                append_event(tx, at=now, request=request, outcome=Outcome.ANSWERED, detail=detail)

            yield tx, now, audit


def _actor(request: RequestInfo) -> str | None:
    return None if request.principal is None else request.principal.token_id


def _check_amount(units: int, what: str, *, allow_zero: bool) -> None:
    if isinstance(units, bool) or not isinstance(units, int):
        raise InvalidAmount(f"{what} must be a whole number of 1e-9 steps, not {units!r}")
    if units < 0 or (units == 0 and not allow_zero):
        raise InvalidAmount(f"{what} must be {'non-negative' if allow_zero else 'positive'}")


MAX_PURPOSE_CHARS = 500


def _check_purpose(purpose: str, agreement: str) -> tuple[str, str]:
    purpose, agreement = purpose.strip(), agreement.strip()
    if not purpose or not agreement:
        raise MissingPurpose(
            "a new allocation needs its purpose and its agreement reference (e.g. the"
            " data-sharing agreement's id): both are shown on the public transparency page"
        )
    if len(purpose) > MAX_PURPOSE_CHARS or len(agreement) > MAX_PURPOSE_CHARS:
        raise MissingPurpose(f"purpose and agreement are at most {MAX_PURPOSE_CHARS} characters")
    return purpose, agreement


def _check_expiry(expires_at: dt.datetime | None, now: dt.datetime, what: str) -> None:
    if expires_at is not None and expires_at <= now:
        raise ExpiryInThePast(
            f"{what} cannot expire at {format_optional(expires_at)}: that is not in the"
            f" future (now {format_optional(now)}); give a later date"
        )


def _check_reason(reason: str) -> None:
    if not reason.strip():
        raise MissingReason("a cap change needs a reason")


def _cap_below_allocated(
    dataset_id: str,
    cap_units: int,
    allocated: int,
    published: int,
    amount: Callable[[int], str],
) -> str:
    """The refusal of a cap below the allocations plus what publishing spent from it."""
    if not published:
        return (
            f"the allocations on {dataset_id} add up to {amount(allocated)}; a cap of"
            f" {amount(cap_units)} would refuse requesters whose allocations still have"
            " room. Reduce allocations first, or force it (--force) to over-subscribe on purpose"
        )
    return (
        f"the allocations on {dataset_id} add up to {amount(allocated)} and publishing has"
        f" spent {amount(published)} from its cap (bias figures, bounds chosen privately),"
        f" so the cap must be at least {amount(allocated + published)}; a cap of"
        f" {amount(cap_units)} would refuse requesters whose allocations still have room."
        " Reduce allocations first, or force it (--force) to over-subscribe on purpose"
    )


def _check_not_self(request: RequestInfo, requester_id: str) -> None:
    principal = request.principal
    if principal is not None and principal.requester_id == requester_id:
        raise SelfGrantForbidden("an administrator cannot add to their own requester's budget")


def _requester(tx: StorageTransaction, requester_id: str) -> Requester:
    requester = tx.get_requester(requester_id)
    if requester is None:
        raise RequesterNotFound(f"no requester {requester_id!r}")
    return requester


def _dataset(tx: StorageTransaction, dataset_id: str) -> Dataset:
    dataset = tx.get_dataset(dataset_id)
    if dataset is None:
        raise DatasetNotFoundError(dataset_id)
    return dataset


def _allocation(tx: StorageTransaction, requester_id: str, dataset_id: str) -> Allocation:
    allocation = tx.get_allocation(requester_id, dataset_id)
    if allocation is None:
        raise AllocationNotFound(f"{requester_id} has no allocation on {dataset_id}")
    return allocation
