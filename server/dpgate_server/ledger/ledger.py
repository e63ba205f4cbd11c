"""The ledger: the only component that spends privacy budget.

The ledger alone decides whether a spend fits, by one rule (`_decide`): the dataset and
an enabled requester exist; an idempotency key already used answers its first release
with what its first call was told, charge included, and charges nothing more (or refuses
another query); a release of the same key the requester may see is served
free, with no new noise; the allocation (with its expiry) and the dataset's global cap
cover the cost.

The spend is two-step. Before computing anything the caller calls `precheck_debit`,
which applies the rule to settle what needs no answer: a repeat is returned free, a
refusal is raised. Otherwise the caller computes the answer and calls `debit`, which in
ONE serialised transaction applies the rule again (two identical queries racing are
charged once) and records the release and the spend. Only after `debit` returns may the
answer leave the server, and it is always the stored payload (`DebitResult.release`):
for a repeat or a retry that is the earlier one, not the one just computed.

Every outcome the ledger decides (a charge, a repeat, a refusal) appends its audit event
in the transaction that decided it, so there is never a release without its event; a
refusal is raised marked `audited`, so the API layer writes no second event. Requests the
ledger never decides (invalid queries, failures, other RPCs) are recorded by the API
layer with `record_event`, and unauthenticated ones with `record_unauthenticated`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from dpgate_server.ledger._audit import append_event
from dpgate_server.ledger._time import utc_now
from dpgate_server.ledger.admin import LedgerAdmin
from dpgate_server.ledger.chain import verify_events, verify_from, verify_tail
from dpgate_server.ledger.errors import (
    BudgetExhausted,
    IdempotencyConflict,
    InvalidAmount,
    ReleaseKeyConflict,
    ReleaseNotFound,
    RequesterDisabled,
    RequesterNotFound,
)
from dpgate_server.ledger.flights import Flight
from dpgate_server.ledger.model import (
    AuditEvent,
    Budget,
    ChainHead,
    ChainVerification,
    Dataset,
    DebitResult,
    DerivedRecord,
    Outcome,
    Principal,
    PublishCharge,
    PublishSpend,
    Reconciliation,
    ReleasePage,
    RequestInfo,
    StoredRelease,
)
from dpgate_server.ledger.postgres_urls import is_postgres_url
from dpgate_server.ledger.sqlite import SqliteStorage
from dpgate_server.ledger.storage import (
    FirstAnswer,
    IdempotencyRecord,
    LedgerStorage,
    StorageTransaction,
)
from dpgate_server.ledger.tokens import TOKEN_PREFIX, hash_token, token_matches
from dpgate_server.ledger.transparency import TransparencyReport, build_report
from dpgate_server.ledger.unauthenticated import (
    UnauthenticatedCounter,
    UnauthenticatedPolicy,
    chain_counts,
    chain_stored_counts,
    writing,
)
from dpgate_server.spend import describe
from dpgate_server.vocabulary.errors import DatasetNotFoundError, DomainError

Clock = Callable[[], dt.datetime]
SameQuestion = Callable[[StoredRelease], bool]
"""Whether a stored release answers the question being asked (see `Ledger.debit`)."""

_KEYS_PER_LOOKUP = 500
"""Release keys per storage lookup (SQLite binds at most 32,766 parameters per statement)."""

MAX_TOKEN_LENGTH = 256
"""Longer presented tokens are rejected before hashing (no work for garbage)."""


class Ledger:
    """Budgets, releases and the audit chain over one `LedgerStorage`.

    Safe to share between threads; several processes may open the same SQLite file or
    PostgreSQL database.

    Example:
        >>> import tempfile, pathlib
        >>> from dpgate_server.ledger import Ledger, RequestInfo
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> with Ledger.open_sqlite(folder / "ledger.db") as ledger:
        ...     ledger.head().count
        0
    """

    def __init__(
        self,
        storage: LedgerStorage,
        *,
        clock: Clock = utc_now,
        unauthenticated_policy: UnauthenticatedPolicy | None = None,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self._unauthenticated = UnauthenticatedCounter(
            unauthenticated_policy or UnauthenticatedPolicy()
        )
        self.admin = LedgerAdmin(storage, clock=clock, unauthenticated=self._unauthenticated)
        """Administrative operations (requesters, tokens, datasets, allocations)."""
        chain_stored_counts(storage, clock)

    @classmethod
    def open_sqlite(
        cls,
        path: Path | str,
        *,
        clock: Clock = utc_now,
        busy_timeout_s: float = 30.0,
        unauthenticated_policy: UnauthenticatedPolicy | None = None,
    ) -> Ledger:
        """Open (creating and migrating if needed) the SQLite ledger at `path`."""
        storage = SqliteStorage(path, busy_timeout_s=busy_timeout_s)
        return cls(storage, clock=clock, unauthenticated_policy=unauthenticated_policy)

    @classmethod
    def open_postgres(
        cls,
        url: str,
        *,
        clock: Clock = utc_now,
        busy_timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        max_connections: int = 16,
        unauthenticated_policy: UnauthenticatedPolicy | None = None,
    ) -> Ledger:
        """Open (migrating if needed) the PostgreSQL ledger at `url` (postgresql://...).

        Raises:
            LedgerUnavailable: the database cannot be reached.
            LedgerSchemaError: the database was migrated by a newer dpgate.
        """
        # psycopg loads with the PostgreSQL storage, only for a PostgreSQL ledger.
        from dpgate_server.ledger.postgres import PostgresStorage  # noqa: PLC0415

        storage = PostgresStorage(
            url,
            busy_timeout_s=busy_timeout_s,
            connect_timeout_s=connect_timeout_s,
            max_connections=max_connections,
        )
        return cls(storage, clock=clock, unauthenticated_policy=unauthenticated_policy)

    @classmethod
    def open(
        cls,
        location: Path | str,
        *,
        clock: Clock = utc_now,
        busy_timeout_s: float = 30.0,
        unauthenticated_policy: UnauthenticatedPolicy | None = None,
    ) -> Ledger:
        """Open a PostgreSQL ledger if `location` is a postgresql:// URL, else an SQLite file."""
        if isinstance(location, str) and is_postgres_url(location):
            return cls.open_postgres(
                location,
                clock=clock,
                busy_timeout_s=busy_timeout_s,
                unauthenticated_policy=unauthenticated_policy,
            )
        return cls.open_sqlite(
            location,
            clock=clock,
            busy_timeout_s=busy_timeout_s,
            unauthenticated_policy=unauthenticated_policy,
        )

    def close(self) -> None:
        """Close the storage."""
        self._storage.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # authentication

    def authenticate(self, token: str) -> Principal | None:
        """The principal a bearer token stands for, or None.

        None for an unknown, malformed, expired or revoked token, or one whose requester
        is disabled. The lookup is by SHA-256 digest, confirmed by a constant-time compare.
        """
        if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_LENGTH:
            return None
        digest = hash_token(token)
        now = self._clock()
        with self._storage.read() as tx:
            found = tx.find_token_by_hash(digest)
            if found is None:
                return None
            info, stored_hash = found
            if not token_matches(token, stored_hash) or not info.is_valid_at(now):
                return None
            requester = tx.get_requester(info.requester_id)
        if requester is None or not requester.enabled:
            return None
        return Principal(
            requester_id=info.requester_id,
            role=info.role,
            token_id=info.token_id,
            practice_codes=info.practice_codes,
        )

    # spending

    def lookup_release(self, release_key: str, requester_id: str) -> StoredRelease | None:
        """A stored release this requester may receive free for `release_key`, or None.

        The requester's own release first; another requester's only if the dataset
        shares releases (the default).
        """
        with self._storage.read() as tx:
            return _visible_release(tx, tx.find_releases(release_key), requester_id)

    def received_releases(
        self, requester_id: str, release_keys: Sequence[str]
    ) -> list[StoredRelease]:
        """The releases of `release_keys` that `requester_id` has received, oldest first.

        Received means paid for, or served free under one of the requester's idempotency
        keys (another requester's release shared with them): answers they already hold in
        full, so naming them tells the requester nothing about anyone else. A shared
        release served to a call without an idempotency key left no record of who got it
        and is not found.
        """
        keys = list(dict.fromkeys(release_keys))
        found: list[StoredRelease] = []
        with self._storage.read() as tx:
            for start in range(0, len(keys), _KEYS_PER_LOOKUP):
                chunk = keys[start : start + _KEYS_PER_LOOKUP]
                found.extend(tx.find_received_releases(requester_id, chunk))
        return sorted(found, key=lambda release: release.created_at)

    def debit(
        self,
        requester_id: str,
        dataset_id: str,
        release_key: str,
        *,
        idempotency_key: str | None,
        cost_units: int,
        payload: bytes,
        request: RequestInfo,
        same_question: SameQuestion | None = None,
        dataset_version: str | None = None,
    ) -> DebitResult:
        """Charge `cost_units` and record the release, atomically and durably.

        Args:
            requester_id: who pays.
            dataset_id: the dataset whose allocation and cap are charged.
            release_key: the engine's canonical key for the query.
            idempotency_key: the client's retry key, or None.
            cost_units: the query's cost, a positive integer of ledger units.
            payload: the engine's serialized answer (stored, never interpreted).
            request: recorded in the audit event written in the same transaction.
            same_question: for a key already used for another release key, whether
                that earlier release answers this question all the same (a retry after
                a new version replaced the one it was answered on); the ledger cannot
                tell, as payloads are opaque to it. None: only the same release key.
            dataset_version: the version the payload was computed on, recorded with the
                release so `derivation_sources` finds it by version.

        Returns:
            The release to return. An identical query already released is a repeat:
            charged nothing, with the earlier payload. A retry (an idempotency key already
            used) charges nothing and replays its first call's answer: the earlier payload,
            and the charge, remaining budget and `repeat` that call was told.

        Raises:
            BudgetExhausted: the allocation (missing or expired counts as zero) or the cap
                cannot pay; only a `refused` audit event is recorded.
            IdempotencyConflict: the key was used by this requester for another query.
            DatasetNotFoundError, RequesterNotFound, RequesterDisabled: as named.
            InvalidAmount: `cost_units` is not a positive integer.
            ReleaseKeyConflict: the key is stored for a different dataset (an engine bug).
        """
        _check_cost(cost_units)
        if request.principal is not None and request.principal.requester_id != requester_id:
            raise ValueError("the request's principal is not the requester being charged")
        spend = _Spend(
            requester_id,
            dataset_id,
            release_key,
            idempotency_key,
            cost_units,
            same_question,
            dataset_version,
        )
        with self._write() as (tx, now):
            decision = _decide(tx, now, spend)
            if isinstance(decision, _Charge):
                return _charge(tx, now, spend, decision, payload, request)
            if isinstance(decision, _Serve):  # said in the chain: the flight lock was missed
                detail = f"{decision.detail}; the answer computed meanwhile was discarded"
                decision = dataclasses.replace(decision, detail=detail)
            outcome = _settle(tx, now, spend, decision, request)
        if isinstance(outcome, DomainError):
            raise outcome  # after the commit: the refusal's event is kept
        return outcome

    def precheck_debit(
        self,
        requester_id: str,
        dataset_id: str,
        release_key: str,
        *,
        idempotency_key: str | None,
        cost_units: int,
        request: RequestInfo,
        same_question: SameQuestion | None = None,
    ) -> DebitResult | None:
        """Settle a spend that needs no answer computed; None: compute it, then `debit`.

        The same rule as `debit` (one function decides both), applied before the answer
        exists, so a request that will not be charged never occupies a worker:

        - an earlier release answers it (an idempotent retry, replayed as its first call
          was answered, or an identical query this requester may see, returned free as a
          repeat): nothing is charged, its event is recorded;
        - it cannot be paid, or is not allowed: its refusal is recorded and raised.

        A spend that fits takes no lock and writes nothing; `debit` decides again when the
        answer is ready, so a budget spent meanwhile is still refused then.

        Raises:
            the errors of `debit`, marked `audited` (their event is in the chain).
        """
        _check_cost(cost_units)
        if request.principal is not None and request.principal.requester_id != requester_id:
            raise ValueError("the request's principal is not the requester being charged")
        spend = _Spend(
            requester_id, dataset_id, release_key, idempotency_key, cost_units, same_question
        )
        with self._storage.read() as tx:
            if isinstance(_decide(tx, self._clock(), spend), _Charge):
                return None
        with self._write() as (tx, now):
            decision = _decide(tx, now, spend)  # again: the snapshot may be stale
            outcome = (
                None
                if isinstance(decision, _Charge)
                else _settle(tx, now, spend, decision, request)
            )
        if isinstance(outcome, DomainError):
            raise outcome
        return outcome

    def derivation_sources(
        self, requester_id: str, dataset_id: str, dataset_version: str | None = None
    ) -> list[StoredRelease]:
        """The releases of `dataset_id` this requester may receive, oldest first: their own,
        and every other requester's only if the dataset shares releases.

        A derived answer adds up cells of one of these (post-processing, free), so it never
        shows a requester a release they could not have been served as a repeat. With
        `dataset_version`, only the releases recorded on it, looked up by the index on
        (dataset, version), and those recorded before releases kept their version (their
        `dataset_version` is None: the caller reads it from the payload).

        Raises:
            DatasetNotFoundError, RequesterNotFound, RequesterDisabled: as named.
        """
        with self._storage.read() as tx:
            dataset = _dataset(tx, dataset_id)
            requester = tx.get_requester(requester_id)
            if requester is None:
                raise RequesterNotFound(f"no requester {requester_id!r}")
            if not requester.enabled:
                raise RequesterDisabled(f"requester {requester_id!r} is disabled")
            owner = None if dataset.share_releases else requester_id
            if dataset_version is None:
                return tx.list_releases(owner, dataset_id)
            return tx.list_releases_on_version(owner, dataset_id, dataset_version)

    def idempotency_key_used(self, requester_id: str, idempotency_key: str) -> bool:
        """Whether `requester_id` has a release recorded under `idempotency_key` (a retry
        of it must replay that answer, never be derived afresh)."""
        with self._storage.read() as tx:
            return tx.get_idempotency(requester_id, idempotency_key) is not None

    def record_derived(
        self,
        requester_id: str,
        dataset_id: str,
        request: RequestInfo,
        *,
        derived_id: str,
        source_release_id: str,
        dataset_version: str,
        canonical_query: str,
    ) -> int:
        """Record and audit a derived answer ("derived from <release>, cost 0"); the
        requester's remaining budget on the dataset, unchanged by it.

        A derived answer adds up cells of a stored release: nothing is charged and no
        answer is stored, but its record lists it with the requester's releases (once per
        answer) and the chain says who received what, and from which release.
        """
        if request.principal is not None and request.principal.requester_id != requester_id:
            raise ValueError("the request's principal is not the requester answered")
        with self._write() as (tx, now):
            remaining = _budget(tx, now, requester_id, _dataset(tx, dataset_id)).remaining_units
            tx.insert_derived(
                DerivedRecord(
                    derived_id=derived_id,
                    requester_id=requester_id,
                    dataset_id=dataset_id,
                    source_release_id=source_release_id,
                    dataset_version=dataset_version,
                    canonical_query=canonical_query,
                    created_at=now,
                    request_id=request.request_id,
                )
            )
            append_event(
                tx,
                at=now,
                request=request,
                outcome=Outcome.ANSWERED,
                dataset_id=dataset_id,
                cost_units=0,
                release_id=source_release_id,
                detail=f"derived from {source_release_id}, cost 0",
                requester_id=requester_id,
            )
        return remaining

    def debit_set(
        self, requester_id: str, members: Sequence[SetMember], request: RequestInfo
    ) -> list[DebitResult]:
        """Charge every member of a question set and record its releases, in ONE transaction.

        Each member is decided by the same rule as `debit`, in order, inside the one
        transaction, so each sees what the members before it spent: the set is paid only if
        the allocation and the cap cover the sum of its charged members. A member already
        released (or a retried member key) is served free, as `debit` would. If any member
        is refused, the transaction rolls back (nothing is released, charged or keyed) and
        the refusal is recorded in a second transaction, naming the member.

        Args:
            requester_id: who pays.
            members: the computed members (see `SetMember`), in the set's order.
            request: the set's request; each member's event carries its own query text.

        Returns:
            One result per member, in order.

        Raises:
            BudgetExhausted: the sum cannot be paid (requested is the sum of the members
                charged so far and the refused one; remaining is what was left before).
            The other errors of `debit`, for the first refused member. All marked
                `audited`, with "question set member i: " before the message.
        """
        if not members:
            raise ValueError("a question set has at least one member")
        for member in members:
            _check_cost(member.cost_units)
        if request.principal is not None and request.principal.requester_id != requester_id:
            raise ValueError("the request's principal is not the requester being charged")
        try:
            with self._write() as (tx, now):
                return _debit_members(tx, now, requester_id, members, request)
        except _SetRefused as refused:
            failed = members[refused.index]
            spend = _Spend(
                requester_id,
                failed.dataset_id,
                failed.release_key,
                failed.idempotency_key,
                failed.cost_units,
                failed.same_question,
            )
            decision = dataclasses.replace(
                refused.decision,
                detail=f"question set refused at member {refused.index}: "
                f"{refused.decision.detail}; nothing released or charged",
            )
            with self._write() as (tx, now):
                outcome = _settle(tx, now, spend, decision, request)
            assert isinstance(outcome, DomainError)
            outcome.message = f"question set member {refused.index}: {outcome.message}"
            outcome.metadata = {**outcome.metadata, "member": str(refused.index)}
            raise outcome from None

    def charge_publish_spend(
        self,
        dataset_id: str,
        dataset_version: str,
        purpose: str,
        cost_units: int,
        request: RequestInfo,
        *,
        max_per_version: int = 1,
    ) -> PublishCharge:
        """Charge a spend declared for a publish-time release to the dataset's cap, once.

        Publishing releases a few DP statistics of the version it builds (the bias figure;
        a bound chosen by a DP quantile). No requester pays: the dataset's global cap does,
        as the cap bounds what is ever learnt from the dataset. In ONE transaction: the
        spend is refused if the cap's remainder cannot pay it, or if `dataset_version`
        already has `max_per_version` spends for `purpose` (the administrator's limit on
        how often a version may spend on it); else it is recorded, added to the dataset's
        spent total and audited (the event lists it in the transparency report, its
        release id the spend's id). A refusal is audited too, and returned, not raised:
        the publish goes on without the statistic.

        Call it before the statistic leaves the process (before the version that holds it
        becomes current); a publish that fails afterwards leaves the spend recorded (never
        less charged than released).

        Raises:
            DatasetNotFoundError: the ledger has no such dataset (nothing recorded).
            InvalidAmount: `cost_units` is not a positive integer.
            ValueError: an empty purpose or version, or `max_per_version` below 1.
        """
        _check_cost(cost_units)
        if not purpose or not dataset_version:
            raise ValueError("a publish spend names its purpose and dataset version")
        if max_per_version < 1:
            raise ValueError(f"max_per_version must be at least 1, not {max_per_version}")
        what = f"publish spend: {purpose} of {dataset_id} {dataset_version}"
        # The event says what was released (the transparency report lists it by this text);
        # the publish's own event keeps the request's text.
        asked = dataclasses.replace(request, query_text=what)
        with self._write() as (tx, now):
            dataset = _dataset(tx, dataset_id)
            cost = describe(cost_units, dataset.accounting)
            earlier = [
                s
                for s in tx.list_publish_spends(dataset_id, dataset_version)
                if s.purpose == purpose
            ]
            refusal = ""
            if len(earlier) >= max_per_version:
                refusal = (
                    f"{dataset_id} {dataset_version} has spent on {purpose} "
                    f"{len(earlier)} time(s), the most the setting allows per version"
                )
            elif cost_units > dataset.cap_remaining_units:
                left = describe(dataset.cap_remaining_units, dataset.accounting)
                refusal = f"the cap of {dataset_id} has {left} left; {purpose} costs {cost}"
            if refusal:
                append_event(
                    tx,
                    at=now,
                    request=asked,
                    outcome=Outcome.REFUSED,
                    dataset_id=dataset_id,
                    detail=f"{what} refused, nothing charged: {refusal}",
                )
                return PublishCharge(None, refusal, dataset.cap_remaining_units)
            spend = PublishSpend(
                spend_id="pub_" + secrets.token_hex(16),
                dataset_id=dataset_id,
                dataset_version=dataset_version,
                purpose=purpose,
                cost_units=cost_units,
                created_at=now,
                request_id=request.request_id,
            )
            tx.insert_publish_spend(spend)
            tx.add_dataset_spent(dataset_id, cost_units)
            append_event(
                tx,
                at=now,
                request=asked,
                outcome=Outcome.ANSWERED,
                dataset_id=dataset_id,
                cost_units=cost_units,
                release_id=spend.spend_id,
                detail=f"{what}, charged {cost} to the dataset's cap",
            )
            return PublishCharge(spend, "", dataset.cap_remaining_units - cost_units)

    def publish_spends(
        self, dataset_id: str | None = None, dataset_version: str | None = None
    ) -> list[PublishSpend]:
        """Spends charged to caps by publishing (on one dataset, of one version), oldest
        first."""
        with self._storage.read() as tx:
            return tx.list_publish_spends(dataset_id, dataset_version)

    def single_flight(self, release_key: str, wait_s: float) -> AbstractContextManager[Flight]:
        """Hold `release_key`'s flight lock (every process on this ledger) while computing.

        Taken after a `precheck_debit` that found nothing to settle, held across the
        computation and the `debit`: callers of the same new question on any replica wait
        (at most `wait_s`) while the first computes and debits. Under the lock, call
        `precheck_debit` again (the first may have released the question since), which
        serves the release free. Without the lock (`held` False) compute anyway: `debit`
        still charges a question once. See `ledger/flights.py`.
        """
        return self._storage.flight(release_key, wait_s)

    # the current version of each dataset

    def current_version(self, dataset_id: str) -> str | None:
        """The version of `dataset_id` every server on this ledger answers on, or None."""
        with self._storage.read() as tx:
            return tx.get_current_version(dataset_id)

    def current_versions(self) -> dict[str, str]:
        """Dataset id -> current version, for every dataset with one."""
        with self._storage.read() as tx:
            return tx.list_current_versions()

    def advance_current_version(self, dataset_id: str, version: str) -> str:
        """Make `version` current unless a newer one already is; the current one after.

        Publishing calls it as its commit point: once it returns, every server on the
        ledger answers on the new version (one row, one transaction). Versions are named
        in order ("v000002" after "v000001"), so the pointer never moves back, whatever
        order racing publishers arrive in.
        """
        with self._storage.write() as tx:
            stored = tx.get_current_version(dataset_id)
            if stored is not None and stored >= version:
                return stored
            tx.put_current_version(dataset_id, version)
            return version

    def get_budget(self, requester_id: str, dataset_id: str) -> Budget:
        """What `requester_id` has granted, spent and remaining on `dataset_id`."""
        now = self._clock()
        with self._storage.read() as tx:
            return _budget(tx, now, requester_id, _dataset(tx, dataset_id))

    def get_dataset(self, dataset_id: str) -> Dataset:
        """The ledger's record of a dataset (cap, spent, sharing)."""
        with self._storage.read() as tx:
            return _dataset(tx, dataset_id)

    def get_release(self, release_id: str) -> StoredRelease:
        """A release by id (callers check that the principal may see it)."""
        with self._storage.read() as tx:
            release = tx.get_release(release_id)
        if release is None:
            raise ReleaseNotFound(f"no release {release_id!r}")
        return release

    def list_releases(
        self, requester_id: str | None = None, dataset_id: str | None = None
    ) -> list[StoredRelease]:
        """Releases paid for by `requester_id` (all if None), optionally on one dataset."""
        with self._storage.read() as tx:
            return tx.list_releases(requester_id, dataset_id)

    def page_releases(
        self, requester_id: str, dataset_id: str | None, *, after: str | None, limit: int
    ) -> ReleasePage:
        """A page of `requester_id`'s releases and derived answers, newest first.

        Pages are keyed, not offset: `after` (the previous page's `next_after`) says where
        each list resumes ("<release>|<derived answer>", each the next item to give or "-"
        when that list is done; a bare release id resumes after it, with no derived
        answers). So items recorded while a caller pages through never repeat or skip an
        item, and the database reads only one page of each list. The lists are merged by
        the time each item was recorded.

        Raises:
            ReleaseNotFound: `after` does not name this requester's items.
            ValueError: `limit` is not positive.
        """
        if limit < 1:
            raise ValueError(f"a page holds at least one release, not {limit}")
        release_from, inclusive, derived_from = _page_cursors(after)
        with self._storage.read() as tx:
            if release_from not in (None, _DONE):
                anchor = tx.get_release(release_from)
                if anchor is None or anchor.requester_id != requester_id:
                    raise ReleaseNotFound(f"no release {release_from!r} of yours to page from")
            if (
                derived_from not in (None, _DONE)
                and tx.get_derived(requester_id, derived_from) is None
            ):
                raise ReleaseNotFound(f"no derived answer {derived_from!r} of yours to page from")
            releases = (
                []
                if release_from == _DONE
                else tx.page_releases(
                    requester_id, dataset_id, release_from, limit + 1, inclusive=inclusive
                )
            )
            derived = (
                []
                if derived_from == _DONE
                else tx.page_derived(requester_id, dataset_id, derived_from, limit + 1)
            )
        return _merged_page(releases, derived, limit)

    # the audit chain

    def record_event(
        self,
        request: RequestInfo,
        outcome: Outcome,
        *,
        dataset_id: str | None = None,
        cost_units: int = 0,
        release_id: str | None = None,
        detail: str = "",
    ) -> AuditEvent:
        """Append an event for a request the ledger did not decide (not a spend).

        Use for invalid or denied requests, failures, read-only RPCs and changes outside
        the ledger (governance). Spends record their own events (`precheck_debit`,
        `debit`), as do the administrative changes (`admin`).
        """
        if outcome is Outcome.UNAUTHENTICATED:
            raise ValueError("use record_unauthenticated, which aggregates them")
        with self._write() as (tx, now):
            return append_event(
                tx,
                at=now,
                request=request,
                outcome=outcome,
                dataset_id=dataset_id,
                cost_units=cost_units,
                release_id=release_id,
                detail=detail,
            )

    def record_unauthenticated(self, request: RequestInfo) -> None:
        """Count a request without valid credentials, in memory (see `unauthenticated`).

        No transaction, no lock, no fsync: the count is chained with its source and
        window's others once the window has closed.
        """
        self._unauthenticated.count(request, self._clock())

    def flush_unauthenticated(self, *, everything: bool = False) -> int:
        """Chain the counts of closed unauthenticated windows now; returns how many events.

        `everything` chains the current window's counts too (at shutdown: counts still in
        memory would otherwise be lost). Writes nothing when there is nothing to chain.
        """
        counter = self._unauthenticated
        with counter.taking(self._clock(), everything=everything) as counts:
            if not counts:
                return 0
            with self._storage.write() as tx:
                return chain_counts(tx, counts, at=self._clock(), policy=counter.policy)

    @property
    def unauthenticated_policy(self) -> UnauthenticatedPolicy:
        """How unauthenticated requests are counted (for a flusher's timing)."""
        return self._unauthenticated.policy

    def head(self) -> ChainHead:
        """The chain's current head (count and last hash)."""
        with self._storage.read() as tx:
            return tx.get_head()

    def list_events(self, after_seq: int = 0, limit: int = 1000) -> list[AuditEvent]:
        """Events with `seq > after_seq`, oldest first, at most `limit`."""
        with self._storage.read() as tx:
            return tx.list_events(after_seq, limit)

    def verify(self, expected_head: ChainHead | None = None) -> ChainVerification:
        """Check the whole chain, and that it still contains `expected_head` if given."""
        with self._storage.read() as tx:
            stored = tx.get_head()
            read = _Counting(tx.iter_events())
            try:
                return verify_events(read, stored, expected_head)
            except (ValueError, TypeError, KeyError) as error:
                bad = read.last_seq + 1
                return ChainVerification(
                    ok=False,
                    checked=read.last_seq,
                    head=ChainHead(count=read.last_seq, hash=""),
                    first_bad_seq=bad,
                    problem=f"event {bad} is unreadable ({error})",
                )

    def verify_recent(self, events: int = 1000) -> ChainVerification:
        """Check the stored head and the last `events` events (what the server does at start).

        Reads at most `events + 1` events (one more shows events added past the stored
        head), so it is quick however long the chain is; `verify` checks all of it.
        """
        with self._storage.read() as tx:
            stored = tx.get_head()
            first_seq = max(1, stored.count - events + 1)
            try:
                return verify_tail(tx.list_events(first_seq - 1, events + 1), stored, first_seq)
            except (ValueError, TypeError, KeyError) as error:
                unreadable = error
        return ChainVerification(
            ok=False,
            checked=0,
            head=stored,
            first_bad_seq=first_seq,
            problem=f"an event from {first_seq} on is unreadable ({unreadable})",
        )

    def verify_from(self, kept: ChainHead) -> ChainVerification:
        """Check that event `kept.count` still has `kept.hash` and the chain verifies from it.

        For a head published earlier (a signed head): a cut or rewritten chain fails here
        even when its stored head was rewritten to match.
        """
        with self._storage.read() as tx:
            stored = tx.get_head()
            try:
                return verify_from(tx.iter_events(max(kept.count, 1)), kept, stored)
            except (ValueError, TypeError, KeyError) as error:
                return ChainVerification(
                    ok=False,
                    checked=0,
                    head=stored,
                    first_bad_seq=kept.count,
                    problem=f"an event after {kept.count} is unreadable ({error})",
                )

    def transparency_report(self) -> TransparencyReport:
        """The public report (answered queries, spend, head) at one consistent snapshot.

        Closed unauthenticated windows are chained first, so the head is current.
        """
        self.flush_unauthenticated()
        with self._storage.read() as tx:
            return build_report(tx, self._clock())

    def reconcile(self) -> Reconciliation:
        """Check that every stored balance equals the sum of the releases behind it (a
        dataset's: its requesters' spends and its publish spends)."""
        problems: list[str] = []
        with self._storage.read() as tx:
            totals = {(t.requester_id, t.dataset_id): t.cost_units for t in tx.release_totals()}
            allocations = tx.list_allocations()
            datasets = tx.list_datasets()
            published: dict[str, int] = {}
            for spend in tx.list_publish_spends(None):
                published[spend.dataset_id] = published.get(spend.dataset_id, 0) + spend.cost_units
        accounting = {d.dataset_id: d.accounting for d in datasets}
        for allocation in allocations:
            key = (allocation.requester_id, allocation.dataset_id)
            released = totals.pop(key, 0)
            if allocation.spent_units != released:
                measure = accounting.get(allocation.dataset_id, "")
                problems.append(
                    f"{key}: allocation spent {describe(allocation.spent_units, measure)}"
                    f" != releases {describe(released, measure)}"
                )
            if allocation.spent_units > allocation.granted_units:
                problems.append(f"{key}: spent above granted")
        problems.extend(f"{key}: releases without an allocation" for key in totals)
        for dataset in datasets:
            spent = sum(a.spent_units for a in allocations if a.dataset_id == dataset.dataset_id)
            spent += published.get(dataset.dataset_id, 0)  # publish spends pay from the cap
            if dataset.spent_units != spent:
                problems.append(
                    f"{dataset.dataset_id}: dataset spent"
                    f" {describe(dataset.spent_units, dataset.accounting)}"
                    f" != {describe(spent, dataset.accounting)}"
                )
            if dataset.spent_units > dataset.cap_units:
                problems.append(f"{dataset.dataset_id}: spent above cap")
        return Reconciliation(ok=not problems, problems=tuple(problems))

    @contextmanager
    def _write(self) -> Iterator[tuple[StorageTransaction, dt.datetime]]:
        with writing(self._storage, self._unauthenticated, self._clock) as (tx, now):
            yield tx, now


class _Counting:
    """An event iterator that remembers the last sequence number it produced."""

    def __init__(self, events: Iterator[AuditEvent]) -> None:
        self._events = events
        self.last_seq = 0

    def __iter__(self) -> Iterator[AuditEvent]:
        for event in self._events:
            self.last_seq = event.seq
            yield event


@dataclass(frozen=True, slots=True)
class SetMember:
    """One computed member of a question set, as `Ledger.debit_set` charges it.

    Attributes:
        dataset_id: the dataset whose allocation and cap pay for it.
        release_key: the engine's canonical key for the member's query.
        idempotency_key: the member's own retry key (derived from the set's), or None.
        cost_units: the member's cost, a positive integer of ledger units.
        payload: the engine's serialized answer (stored, never interpreted).
        query_text: the member's canonical query, for its audit event.
        same_question: as for `Ledger.debit`.
        dataset_version: as for `Ledger.debit`.
    """

    dataset_id: str
    release_key: str
    idempotency_key: str | None
    cost_units: int
    payload: bytes
    query_text: str
    same_question: SameQuestion | None = None
    dataset_version: str | None = None


class _SetRefused(Exception):
    """Rolls back a question set's transaction: member `index` was refused."""

    def __init__(self, index: int, decision: _Refuse) -> None:
        super().__init__(index)
        self.index = index
        self.decision = decision


def _debit_members(
    tx: StorageTransaction,
    now: dt.datetime,
    requester_id: str,
    members: Sequence[SetMember],
    request: RequestInfo,
) -> list[DebitResult]:
    """Decide and record each member in this transaction; raise `_SetRefused` to undo all."""
    results: list[DebitResult] = []
    charged: dict[str, int] = {}
    for index, member in enumerate(members):
        spend = _Spend(
            requester_id,
            member.dataset_id,
            member.release_key,
            member.idempotency_key,
            member.cost_units,
            member.same_question,
            member.dataset_version,
        )
        asked = dataclasses.replace(request, query_text=member.query_text)
        decision = _decide(tx, now, spend)
        if isinstance(decision, _Refuse):
            raise _SetRefused(index, _whole_set(decision, spend, charged))
        if isinstance(decision, _Charge):
            results.append(_charge(tx, now, spend, decision, member.payload, asked))
            charged[member.dataset_id] = charged.get(member.dataset_id, 0) + member.cost_units
            continue
        served = _settle(tx, now, spend, decision, asked)
        assert isinstance(served, DebitResult)
        results.append(served)
    return results


def _whole_set(decision: _Refuse, spend: _Spend, charged: dict[str, int]) -> _Refuse:
    """A budget refusal restated for the set: its sum so far against what was left before."""
    error = decision.error
    before = charged.get(spend.dataset_id, 0)
    if not isinstance(error, BudgetExhausted) or before == 0:
        return decision
    requested = before + spend.cost_units
    remaining = error.remaining_units + before
    accounting = error.accounting
    restated = BudgetExhausted(requested, remaining, accounting=accounting)
    restated.message = (
        f"budget exhausted: the question set costs at least {describe(requested, accounting or '')}"
        f" but only {describe(remaining, accounting or '')} remains"
    )
    detail = f"set requested {describe(requested, accounting or '')}; "
    detail += f"{describe(remaining, accounting or '')} remains"
    return _Refuse(restated, decision.outcome, detail)


@dataclass(frozen=True, slots=True)
class _Spend:
    """The arguments of one debit, bundled (private, not part of the API)."""

    requester_id: str
    dataset_id: str
    release_key: str
    idempotency_key: str | None
    cost_units: int
    same_question: SameQuestion | None
    dataset_version: str | None = None

    def answered_by(self, earlier: StoredRelease) -> bool:
        """Whether the release an idempotency key was used for answers this spend."""
        if earlier.release_key == self.release_key:
            return True
        return self.same_question is not None and self.same_question(earlier)


@dataclass(frozen=True, slots=True)
class _Refuse:
    """The spend is refused with `error`, audited as `outcome` with `detail`."""

    error: DomainError
    outcome: Outcome
    detail: str


@dataclass(frozen=True, slots=True)
class _Serve:
    """An earlier release answers the spend for free (a retry or an identical query).

    `answer` is what the caller is told: for a retry, what its first call was told (it
    may have been charged); for an identical query, a free repeat.
    """

    release: StoredRelease
    detail: str
    answer: FirstAnswer
    remember_key: bool
    """Whether the spend's idempotency key is to be recorded for this release."""


@dataclass(frozen=True, slots=True)
class _Charge:
    """The spend fits: `remaining_units` is what remains before it is charged."""

    remaining_units: int


_Decision = _Refuse | _Serve | _Charge


def _decide(tx: StorageTransaction, now: dt.datetime, spend: _Spend) -> _Decision:
    """The one rule of a spend, from reads alone: refuse it, serve a repeat, or charge it.

    In order: the dataset and an enabled requester exist; an idempotency key already used
    answers its first release (or refuses another query); a release of the same key the
    requester may see is served free; the allocation (a missing or expired one is zero)
    and the dataset's cap both cover the cost.
    """
    dataset = _parties(tx, spend)
    if isinstance(dataset, _Refuse):
        return dataset
    remaining = _budget(tx, now, spend.requester_id, dataset).remaining_units
    repeat = _repeat(tx, spend, remaining)
    if repeat is not None:
        return repeat
    if spend.cost_units > remaining:
        cost, left = (describe(n, dataset.accounting) for n in (spend.cost_units, remaining))
        error = BudgetExhausted(spend.cost_units, remaining, accounting=dataset.accounting)
        return _Refuse(error, Outcome.REFUSED, f"requested {cost}; {left} remains")
    return _Charge(remaining)


def _parties(tx: StorageTransaction, spend: _Spend) -> Dataset | _Refuse:
    """The dataset, if it and an enabled requester exist; else the refusal."""
    dataset = tx.get_dataset(spend.dataset_id)
    if dataset is None:
        return _Refuse(DatasetNotFoundError(spend.dataset_id), Outcome.INVALID, "unknown dataset")
    requester = tx.get_requester(spend.requester_id)
    if requester is None:
        unknown = RequesterNotFound(f"no requester {spend.requester_id!r}")
        return _Refuse(unknown, Outcome.INVALID, "unknown requester")
    if not requester.enabled:
        disabled = RequesterDisabled(f"requester {spend.requester_id!r} is disabled")
        return _Refuse(disabled, Outcome.DENIED, "requester disabled")
    return dataset


def _repeat(tx: StorageTransaction, spend: _Spend, remaining: int) -> _Serve | _Refuse | None:
    """An idempotent retry or an identical query released before, served free; else None."""
    if spend.idempotency_key is not None:
        prior = tx.get_idempotency(spend.requester_id, spend.idempotency_key)
        if prior is not None:
            earlier = tx.get_release(prior.release_id)
            if earlier is None:  # pragma: no cover - a foreign key prevents it
                raise ReleaseNotFound(prior.release_id)
            if not spend.answered_by(earlier):
                conflict = IdempotencyConflict(
                    f"idempotency key {spend.idempotency_key!r} was used for another query"
                )
                detail = "idempotency key reused for a different query"
                return _Refuse(conflict, Outcome.INVALID, detail)
            # The first answer again; a key recorded before schema 3 kept none: a free repeat.
            answer = prior.first_answer or FirstAnswer(0, remaining, repeat=True)
            return _Serve(earlier, "idempotent retry", answer, remember_key=False)
    same_key = tx.find_releases(spend.release_key)
    if any(release.dataset_id != spend.dataset_id for release in same_key):
        raise ReleaseKeyConflict(f"release key {spend.release_key!r} belongs to another dataset")
    existing = _visible_release(tx, same_key, spend.requester_id)
    if existing is None:
        return None
    free = FirstAnswer(0, remaining, repeat=True)
    return _Serve(existing, "identical query released before", free, remember_key=True)


def _settle(
    tx: StorageTransaction,
    now: dt.datetime,
    spend: _Spend,
    decision: _Refuse | _Serve,
    request: RequestInfo,
) -> DebitResult | DomainError:
    """Write a refusal's or a free repeat's audit event; the result, or the error to raise.

    The error comes back marked `audited`: its event is in the chain, written in the
    transaction that decided it, and the API layer must not write another.
    """
    if isinstance(decision, _Refuse):
        _audit(tx, now, spend, request, decision.outcome, decision.detail)
        decision.error.audited = True
        return decision.error
    release, answer = decision.release, decision.answer
    if decision.remember_key:
        _remember_key(tx, now, spend, release, answer)
    _audit(tx, now, spend, request, Outcome.ANSWERED, decision.detail, release=release)
    return DebitResult(release, answer.charged_units, answer.remaining_units, answer.repeat)


def _charge(
    tx: StorageTransaction,
    now: dt.datetime,
    spend: _Spend,
    decision: _Charge,
    payload: bytes,
    request: RequestInfo,
) -> DebitResult:
    """Record the release and charge it, with its audit event, in this transaction."""
    release = StoredRelease(
        release_id="rel_" + secrets.token_hex(16),
        release_key=spend.release_key,
        dataset_id=spend.dataset_id,
        requester_id=spend.requester_id,
        cost_units=spend.cost_units,
        payload=payload,
        created_at=now,
        request_id=request.request_id,
        dataset_version=spend.dataset_version,
    )
    tx.insert_release(release)
    tx.add_allocation_spent(spend.requester_id, spend.dataset_id, spend.cost_units)
    tx.add_dataset_spent(spend.dataset_id, spend.cost_units)
    answer = FirstAnswer(spend.cost_units, decision.remaining_units - spend.cost_units, False)
    _remember_key(tx, now, spend, release, answer)
    _audit(tx, now, spend, request, Outcome.ANSWERED, "charged", release=release, charged=True)
    return DebitResult(release, answer.charged_units, answer.remaining_units, answer.repeat)


def _audit(
    tx: StorageTransaction,
    now: dt.datetime,
    spend: _Spend,
    request: RequestInfo,
    outcome: Outcome,
    detail: str,
    *,
    release: StoredRelease | None = None,
    charged: bool = False,
) -> None:
    append_event(
        tx,
        at=now,
        request=request,
        outcome=outcome,
        dataset_id=spend.dataset_id,
        cost_units=spend.cost_units if charged else 0,
        release_id=None if release is None else release.release_id,
        detail=detail,
        requester_id=spend.requester_id,
    )


def _check_cost(cost_units: int) -> None:
    if isinstance(cost_units, bool) or not isinstance(cost_units, int) or cost_units <= 0:
        raise InvalidAmount(f"a cost must be a positive integer of units: {cost_units!r}")


def _remember_key(
    tx: StorageTransaction,
    now: dt.datetime,
    spend: _Spend,
    release: StoredRelease,
    answer: FirstAnswer,
) -> None:
    """Record the spend's idempotency key with its release and the answer given, to replay."""
    if spend.idempotency_key is not None:
        record = IdempotencyRecord(release.release_key, release.release_id, answer)
        tx.insert_idempotency(spend.requester_id, spend.idempotency_key, record, now)


def _visible_release(
    tx: StorageTransaction, releases: list[StoredRelease], requester_id: str
) -> StoredRelease | None:
    """The release of this key the requester may receive: own first, else a shared one."""
    for release in releases:
        if release.requester_id == requester_id:
            return release
    if not releases:
        return None
    dataset = tx.get_dataset(releases[0].dataset_id)
    if dataset is not None and dataset.share_releases:
        return releases[0]
    return None


_DONE = "-"
"""A page cursor's mark for a list with nothing left."""


def _page_cursors(after: str | None) -> tuple[str | None, bool, str | None]:
    """(release to resume from, whether inclusively, derived answer to resume from)."""
    if after is None:
        return None, False, None
    if "|" not in after:  # a token from before derived answers: the last release given
        return after, False, _DONE
    releases, derived = after.split("|", 1)
    return releases, True, derived


def _merged_page(
    releases: list[StoredRelease], derived: list[DerivedRecord], limit: int
) -> ReleasePage:
    """Up to `limit` items of the two newest-first lists, newest first, and the cursor."""
    page: list[StoredRelease | DerivedRecord] = []
    i = j = 0
    while len(page) < limit and (i < len(releases) or j < len(derived)):
        if j >= len(derived) or (
            i < len(releases) and releases[i].created_at >= derived[j].created_at
        ):
            page.append(releases[i])
            i += 1
        else:
            page.append(derived[j])
            j += 1
    # Each list was read to limit + 1 items and at most `limit` were taken, so an item
    # left over in a list is its next one, and a list read to its end has none.
    next_release = releases[i].release_id if i < len(releases) else _DONE
    next_derived = derived[j].derived_id if j < len(derived) else _DONE
    if next_release == _DONE and next_derived == _DONE:
        return ReleasePage(tuple(page), None)
    return ReleasePage(tuple(page), f"{next_release}|{next_derived}")


def _dataset(tx: StorageTransaction, dataset_id: str) -> Dataset:
    dataset = tx.get_dataset(dataset_id)
    if dataset is None:
        raise DatasetNotFoundError(dataset_id)
    return dataset


def _budget(
    tx: StorageTransaction, now: dt.datetime, requester_id: str, dataset: Dataset
) -> Budget:
    allocation = tx.get_allocation(requester_id, dataset.dataset_id)
    if allocation is None:
        return Budget(requester_id, dataset.dataset_id, 0, 0, None, 0, dataset.cap_remaining_units)
    return Budget(
        requester_id=requester_id,
        dataset_id=dataset.dataset_id,
        granted_units=allocation.granted_units,
        spent_units=allocation.spent_units,
        expires_at=allocation.expires_at,
        allocation_remaining_units=allocation.remaining_at(now),
        cap_remaining_units=dataset.cap_remaining_units,
    )
