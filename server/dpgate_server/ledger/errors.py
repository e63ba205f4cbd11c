"""Every error the ledger raises, in one tree.

The API layer maps these to gRPC status codes in one table; nothing else in the ledger
raises bare exceptions on purpose (a `sqlite3` or `psycopg` error that escapes is a bug or a
broken disk, and maps to INTERNAL).

Each class carries its `ErrorReason` (`reason`), and `dpgate_server.api.errors` maps
reasons to gRPC status codes in its one table. An unknown dataset is the shared
`dpgate_server.vocabulary.errors.DatasetNotFoundError`, the same error the dataset store
raises. `ReleaseKeyConflict` and `LedgerSchemaError` are INTERNAL: the first means the
engine's release keys are wrong, the second stops the server's start.

Each class's docstring says when it is raised.

Authentication failures are not exceptions: `Ledger.authenticate` returns None, so that
no caller can forget to catch them.
"""

from __future__ import annotations

from dpgate_server.spend import describe
from dpgate_server.vocabulary.errors import DomainError, ErrorReason


class LedgerError(DomainError):
    """Base of every error the ledger raises on purpose."""


class BudgetExhausted(LedgerError):
    """The debit would spend more than the requester or the dataset has left.

    The message states both amounts as people read them ("epsilon 4.8"), never in the
    ledger's integer units.

    Attributes:
        requested_units: the cost of the refused query, in ledger units.
        remaining_units: what could still be spent: the smaller of the allocation's
            remainder and the dataset cap's remainder (never negative).
        accounting: the dataset's accounting ("pure_dp" counts epsilon, "zcdp" rho), or
            None when the raiser does not know it (the amounts then read "budget 4.8").
    """

    reason = ErrorReason.BUDGET_EXHAUSTED

    def __init__(
        self, requested_units: int, remaining_units: int, *, accounting: str | None = None
    ) -> None:
        measure = accounting or ""
        super().__init__(
            f"budget exhausted: the query costs {describe(requested_units, measure)} "
            f"but only {describe(remaining_units, measure)} remains"
        )
        self.requested_units = requested_units
        self.remaining_units = remaining_units
        self.accounting = accounting


class IdempotencyConflict(LedgerError):
    """An idempotency key was reused for a different query (release key)."""

    reason = ErrorReason.IDEMPOTENCY_KEY_REUSED


class InvalidAmount(LedgerError, ValueError):
    """An amount that the operation cannot take (negative, zero, not an integer)."""

    reason = ErrorReason.BAD_AMOUNT


class AllocationBelowSpent(LedgerError):
    """An allocation cannot be reduced below what has been spent from it."""

    reason = ErrorReason.BELOW_SPENT


class CapBelowSpent(LedgerError):
    """A dataset cap cannot be lowered below what has been spent from it."""

    reason = ErrorReason.BELOW_SPENT


class CapBelowAllocated(LedgerError):
    """A dataset cap below the sum of its allocations plus what publishing has spent from it
    (publish spends: the bias figure, bounds chosen privately), without the administrator's
    `force`.

    Allocations then promise more than the cap lets anyone spend: whoever asks last is
    refused though their own allocation has room. Allowed on purpose with `force`.
    """

    reason = ErrorReason.CAP_BELOW_ALLOCATED


class ExpiryInThePast(LedgerError):
    """A token or allocation expiry at or before the present: it would be dead on arrival."""

    reason = ErrorReason.BAD_TIME


class SelfGrantForbidden(LedgerError):
    """An administrator may not grant or top up their own requester's allocation."""

    reason = ErrorReason.SELF_GRANT_FORBIDDEN


class InvalidTokenRequest(LedgerError, ValueError):
    """A token request whose role and practice codes do not fit together."""

    reason = ErrorReason.BAD_TOKEN_REQUEST


class MissingReason(LedgerError, ValueError):
    """A change that must be explained (a cap change) came without a reason."""

    reason = ErrorReason.REASON_REQUIRED


class MissingPurpose(MissingReason):
    """A new allocation came without its purpose or its agreement reference."""


class RequesterDisabled(LedgerError):
    """The requester was disabled by an administrator and may not spend."""

    reason = ErrorReason.REQUESTER_DISABLED


class NotFound(LedgerError, LookupError):
    """Base of the unknown-id errors."""


class RequesterNotFound(NotFound):
    """No requester has this id."""

    reason = ErrorReason.REQUESTER_NOT_FOUND


class AllocationNotFound(NotFound):
    """This requester has no allocation on this dataset."""

    reason = ErrorReason.ALLOCATION_NOT_FOUND


class ReleaseNotFound(NotFound):
    """No release has this id."""

    reason = ErrorReason.RELEASE_NOT_FOUND


class TokenNotFound(NotFound):
    """No token has this id."""

    reason = ErrorReason.TOKEN_NOT_FOUND


class AlreadyExists(LedgerError):
    """The requester, dataset or allocation being created already exists."""

    reason = ErrorReason.ALREADY_EXISTS


class ReleaseKeyConflict(LedgerError):
    """A release key is already stored for a different dataset (the engine's keys are wrong)."""

    reason = ErrorReason.INTERNAL


class LedgerBusy(LedgerError):
    """The store stayed locked by other writers for longer than the busy timeout.

    `str()` keeps the storage's detail for the operator's log; `message` is what the
    caller is told.
    """

    reason = ErrorReason.OVERLOADED
    retry_after_seconds = 1.0

    def __init__(self, detail: str) -> None:
        super().__init__(
            "the ledger is busy; retry shortly (nothing was charged)",
            {"retry_after_seconds": f"{self.retry_after_seconds:.3f}"},
            detail=detail,
        )


class LedgerUnavailable(LedgerError):
    """The ledger's database cannot be reached (down, restarting, network): retry later.

    The transaction that failed was rolled back, so nothing it would have written (a
    charge, a release, an audit event) exists; a debit whose COMMIT was lost in flight
    may have committed, which is why clients retry with the same idempotency key.

    `str()` keeps the (redacted) database detail for the operator's log; `message` is what
    the caller is told, with no database detail.
    """

    reason = ErrorReason.LEDGER_UNAVAILABLE
    retry_after_seconds = 2.0

    def __init__(self, detail: str) -> None:
        super().__init__(
            "the privacy ledger cannot be reached; nothing was charged. Retry in a few seconds"
            " (a retry with the same idempotency key is never charged twice)",
            {"retry_after_seconds": f"{self.retry_after_seconds:.3f}"},
            detail=detail,
        )


class LedgerSchemaError(LedgerError):
    """The ledger's schema version is newer than this code knows, or a migration failed."""

    reason = ErrorReason.INTERNAL
