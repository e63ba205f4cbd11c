"""The storage interface the ledger's logic is written against.

The logic (`Ledger`, `LedgerAdmin`) decides; a storage only reads and writes records inside
transactions. Two kinds of transaction exist:

- `write()`: serialised against every other writer, in every process sharing the store,
  from its first statement to commit. SQLite gets this from `BEGIN IMMEDIATE`; a
  PostgreSQL storage would take `SELECT ... FROM audit_head FOR UPDATE` (or a
  transaction-level advisory lock) first. Every write appends to the audit chain, whose
  head is a single row, so writers are serial anyway; serialising them whole is what makes
  the debit's check-then-record race-free.
- `read()`: a consistent snapshot that never blocks writers (WAL on SQLite, REPEATABLE
  READ on PostgreSQL).

Leaving the `with` block normally commits; an exception rolls back and propagates.
A storage raises `LedgerBusy` when it cannot get the write lock in time, and
`AlreadyExists` on a duplicate primary key; nothing else on purpose.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from dpgate_server.ledger.flights import Flight
from dpgate_server.ledger.model import (
    Allocation,
    AuditEvent,
    CapChange,
    ChainHead,
    Dataset,
    DerivedRecord,
    PublishSpend,
    Requester,
    StoredRelease,
    TokenInfo,
)


@dataclass(frozen=True, slots=True)
class FirstAnswer:
    """What the first call with an idempotency key was told besides the release itself.

    A retry whose first answer was lost is told exactly this again (its `remaining_units`
    is as it was then), so a client learns what the first attempt charged.
    """

    charged_units: int
    remaining_units: int
    repeat: bool


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """Which release an idempotency key was first used for, and what its caller was told.

    `first_answer` is None for keys recorded before ledger schema 3, which kept no answer:
    their retries are told what they were told before (a free repeat).
    """

    release_key: str
    release_id: str
    first_answer: FirstAnswer | None = None


IDEMPOTENCY_COLUMNS = (
    "release_key, release_id, first_charged_units, first_remaining_units, first_repeat"
)
"""The columns `idempotency_record` reads, in its order (the same on both backends)."""


def idempotency_record(row: Sequence[Any]) -> IdempotencyRecord:
    """An `IdempotencyRecord` from a row of `IDEMPOTENCY_COLUMNS`."""
    release_key, release_id, charged, remaining, repeat = row
    if charged is None:  # recorded before schema 3
        return IdempotencyRecord(str(release_key), str(release_id))
    answer = FirstAnswer(int(charged), int(remaining), bool(repeat))
    return IdempotencyRecord(str(release_key), str(release_id), answer)


@dataclass(frozen=True, slots=True)
class PendingUnauthenticated:
    """Unauthenticated requests from one source in one window, not yet in the chain.

    Attributes:
        source: the peer's address (or the bucket of sources past the per-window limit).
        window_start: the start of the counting window.
        count: requests counted.
        first_rpc: the RPC of the first request counted.
        first_request_id: its request id (the chained event's request id).
        last_at: when the last request counted arrived.
    """

    source: str
    window_start: dt.datetime
    count: int
    first_rpc: str
    first_request_id: str
    last_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ReleaseTotal:
    """How many releases a requester bought on a dataset, and their summed cost."""

    requester_id: str
    dataset_id: str
    releases: int
    cost_units: int
    last_released_at: dt.datetime
    """When the latest of them was released (the requester's last spend on the dataset)."""


class StorageTransaction(Protocol):
    """Record-level reads and writes inside one transaction."""

    # requesters
    def insert_requester(self, requester: Requester) -> None: ...
    def get_requester(self, requester_id: str) -> Requester | None: ...
    def set_requester_enabled(self, requester_id: str, enabled: bool) -> None: ...
    def list_requesters(self) -> list[Requester]: ...

    # tokens
    def insert_token(self, info: TokenInfo, token_hash: str) -> None: ...
    def find_token_by_hash(self, token_hash: str) -> tuple[TokenInfo, str] | None: ...
    def get_token(self, token_id: str) -> TokenInfo | None: ...
    def set_token_revoked(self, token_id: str, revoked_at: dt.datetime) -> None: ...
    def list_tokens(self, requester_id: str | None) -> list[TokenInfo]: ...

    # datasets and caps
    def insert_dataset(self, dataset: Dataset) -> None: ...
    def get_dataset(self, dataset_id: str) -> Dataset | None: ...
    def list_datasets(self) -> list[Dataset]: ...
    def set_dataset_cap(self, dataset_id: str, cap_units: int) -> None: ...
    def set_dataset_sharing(self, dataset_id: str, share_releases: bool) -> None: ...
    def add_dataset_spent(self, dataset_id: str, units: int) -> None: ...
    def insert_cap_change(self, change: CapChange) -> None: ...
    def list_cap_changes(self, dataset_id: str) -> list[CapChange]: ...

    # allocations
    def get_allocation(self, requester_id: str, dataset_id: str) -> Allocation | None: ...
    def put_allocation(self, allocation: Allocation) -> None: ...
    def add_allocation_spent(self, requester_id: str, dataset_id: str, units: int) -> None: ...
    def list_allocations(self) -> list[Allocation]: ...

    # releases and idempotency keys
    def find_releases(self, release_key: str) -> list[StoredRelease]: ...
    def get_release(self, release_id: str) -> StoredRelease | None: ...
    def insert_release(self, release: StoredRelease) -> None: ...
    def list_releases(
        self, requester_id: str | None, dataset_id: str | None
    ) -> list[StoredRelease]: ...
    def list_releases_on_version(
        self, requester_id: str | None, dataset_id: str, dataset_version: str
    ) -> list[StoredRelease]:
        """The releases of `dataset_id` (of one requester, or of all with None) recorded on
        `dataset_version`, and those recorded without a version (before the ledger kept
        it: the caller reads their payloads), oldest first. Uses releases_by_version."""
        ...

    def page_releases(
        self,
        requester_id: str,
        dataset_id: str | None,
        before_release_id: str | None,
        limit: int,
        *,
        inclusive: bool = False,
    ) -> list[StoredRelease]:
        """At most `limit` of the requester's releases (optionally on one dataset), newest
        first in the order they were recorded, all recorded before `before_release_id`
        (None: from the newest; `inclusive`: that release first). An unknown
        `before_release_id` gives an empty list."""
        ...

    def insert_derived(self, record: DerivedRecord) -> None:
        """Record a derived answer given to a requester; nothing if it already is."""
        ...

    def get_derived(self, requester_id: str, derived_id: str) -> DerivedRecord | None: ...

    def page_derived(
        self, requester_id: str, dataset_id: str | None, from_derived_id: str | None, limit: int
    ) -> list[DerivedRecord]:
        """At most `limit` of the requester's derived answers, newest first in the order
        they were recorded, from `from_derived_id` on (inclusive; None: from the newest)."""
        ...

    def find_received_releases(
        self, requester_id: str, release_keys: Sequence[str]
    ) -> list[StoredRelease]:
        """The releases of these keys the requester received: paid for, or served under
        one of the requester's idempotency keys (a shared release), in recorded order."""
        ...

    def release_totals(self) -> list[ReleaseTotal]: ...
    def get_idempotency(self, requester_id: str, key: str) -> IdempotencyRecord | None: ...
    def insert_idempotency(
        self, requester_id: str, key: str, record: IdempotencyRecord, at: dt.datetime
    ) -> None: ...

    # spends charged to a dataset's cap by publishing (ledger schema 6)
    def insert_publish_spend(self, spend: PublishSpend) -> None: ...
    def list_publish_spends(
        self, dataset_id: str | None, dataset_version: str | None = None
    ) -> list[PublishSpend]:
        """Publish spends (on one dataset, of one version), oldest first."""
        ...

    # the current version of each dataset (publishing moves it, every replica reads it)
    def get_current_version(self, dataset_id: str) -> str | None: ...
    def put_current_version(self, dataset_id: str, version: str) -> None: ...
    def list_current_versions(self) -> dict[str, str]: ...

    # audit chain
    def get_head(self) -> ChainHead: ...
    def append_event(self, event: AuditEvent) -> None:
        """Insert the event and move the head to it, in this transaction."""
        ...

    def iter_events(self, first_seq: int = 1) -> Iterator[AuditEvent]: ...
    def list_events(self, after_seq: int, limit: int) -> list[AuditEvent]: ...

    # unauthenticated counts an earlier version stored (counts are now kept in memory);
    # the ledger chains and deletes any it finds when it opens
    def list_pending_unauthenticated(self) -> list[PendingUnauthenticated]: ...
    def delete_pending_unauthenticated(self, source: str, window_start: dt.datetime) -> None: ...


class LedgerStorage(Protocol):
    """A durable store of ledger records (SQLite now, PostgreSQL later)."""

    def write(self) -> AbstractContextManager[StorageTransaction]:
        """A transaction serialised against all other writers (see module docstring)."""
        ...

    def read(self) -> AbstractContextManager[StorageTransaction]:
        """A consistent read-only snapshot."""
        ...

    def flight(self, release_key: str, wait_s: float) -> AbstractContextManager[Flight]:
        """The flight lock of `release_key` across every process sharing the store, waited
        for at most `wait_s` (see `ledger/flights.py`); no transaction."""
        ...

    def close(self) -> None:
        """Release connections; the storage is unusable afterwards."""
        ...
