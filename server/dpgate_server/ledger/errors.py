"""Every error the ledger raises, in one tree.

The API layer maps these to gRPC status codes in one table; nothing else in the ledger
raises bare exceptions on purpose (a `sqlite3` or `psycopg` error that escapes is a bug or a
broken disk, and maps to INTERNAL).

Each error, and the gRPC status (and ErrorInfo reason) the API should map it to:

| error | status / reason |
|---|---|
| `BudgetExhausted(requested_units, remaining_units)` | RESOURCE_EXHAUSTED / BUDGET_EXHAUSTED |
| `IdempotencyConflict` | INVALID_ARGUMENT / IDEMPOTENCY_KEY_REUSED |
| `InvalidAmount` | INVALID_ARGUMENT / BAD_AMOUNT |
| `InvalidTokenRequest` | INVALID_ARGUMENT / BAD_TOKEN_REQUEST |
| `MissingReason` | INVALID_ARGUMENT / REASON_REQUIRED |
| `AllocationBelowSpent`, `CapBelowSpent` | FAILED_PRECONDITION / BELOW_SPENT |
| `SelfGrantForbidden` | PERMISSION_DENIED / ROLE_FORBIDDEN |
| `RequesterDisabled` | PERMISSION_DENIED / REQUESTER_DISABLED |
| `NotFound` and its subclasses (requester, dataset, allocation, release, token) | NOT_FOUND |
| `AlreadyExists` | ALREADY_EXISTS |
| `LedgerBusy` | UNAVAILABLE / OVERLOADED (retry later) |
| `LedgerUnavailable` | UNAVAILABLE / LEDGER_UNAVAILABLE (retry later; nothing was charged) |
| `ReleaseKeyConflict` | INTERNAL (the engine's release keys are wrong) |
| `LedgerSchemaError` | the server refuses to start |

Each class's docstring says when it is raised.

Authentication failures are not exceptions: `Ledger.authenticate` returns None, so that
no caller can forget to catch them.
"""

from __future__ import annotations

from dpgate_server.spend import describe


class LedgerError(Exception):
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


class InvalidAmount(LedgerError, ValueError):
    """An amount that the operation cannot take (negative, zero, not an integer)."""


class AllocationBelowSpent(LedgerError):
    """An allocation cannot be reduced below what has been spent from it."""


class CapBelowSpent(LedgerError):
    """A dataset cap cannot be lowered below what has been spent from it."""


class SelfGrantForbidden(LedgerError):
    """An administrator may not grant or top up their own requester's allocation."""


class InvalidTokenRequest(LedgerError, ValueError):
    """A token request whose role and practice codes do not fit together."""


class MissingReason(LedgerError, ValueError):
    """A change that must be explained (a cap change) came without a reason."""


class MissingPurpose(MissingReason):
    """A new allocation came without its purpose or its agreement reference."""


class RequesterDisabled(LedgerError):
    """The requester was disabled by an administrator and may not spend."""


class NotFound(LedgerError, LookupError):
    """Base of the unknown-id errors."""


class RequesterNotFound(NotFound):
    """No requester has this id."""


class DatasetNotFound(NotFound):
    """The ledger has no dataset with this id (register it with `create_dataset`)."""


class AllocationNotFound(NotFound):
    """This requester has no allocation on this dataset."""


class ReleaseNotFound(NotFound):
    """No release has this id."""


class TokenNotFound(NotFound):
    """No token has this id."""


class AlreadyExists(LedgerError):
    """The requester, dataset or allocation being created already exists."""


class ReleaseKeyConflict(LedgerError):
    """A release key is already stored for a different dataset (the engine's keys are wrong)."""


class LedgerBusy(LedgerError):
    """The store stayed locked by other writers for longer than the busy timeout."""


class LedgerUnavailable(LedgerError):
    """The ledger's database cannot be reached (down, restarting, network): retry later.

    The transaction that failed was rolled back, so nothing it would have written (a
    charge, a release, an audit event) exists; a debit whose COMMIT was lost in flight
    may have committed, which is why clients retry with the same idempotency key.
    """


class LedgerSchemaError(LedgerError):
    """The ledger's schema version is newer than this code knows, or a migration failed."""
