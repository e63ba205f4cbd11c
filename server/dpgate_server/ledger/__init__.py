"""The privacy ledger: budgets that cannot be overspent, free repeats, a tamper-evident log.

Only the ledger spends. It never imports grpc nor the query engine: a release is an opaque
payload stored under the engine's canonical key, and amounts are integers of ledger units
(`dpgate_server.spend`). Start with `Ledger.open_sqlite(path)` or
`Ledger.open_postgres(url)`; errors are in
`dpgate_server.ledger.errors`.
"""

from typing import TYPE_CHECKING

from dpgate_server.ledger.admin import LedgerAdmin
from dpgate_server.ledger.errors import (
    AllocationBelowSpent,
    AllocationNotFound,
    AlreadyExists,
    BudgetExhausted,
    CapBelowAllocated,
    CapBelowSpent,
    ExpiryInThePast,
    IdempotencyConflict,
    InvalidAmount,
    InvalidTokenRequest,
    LedgerBusy,
    LedgerError,
    LedgerSchemaError,
    LedgerUnavailable,
    MissingPurpose,
    MissingReason,
    NotFound,
    ReleaseKeyConflict,
    ReleaseNotFound,
    RequesterDisabled,
    RequesterNotFound,
    SelfGrantForbidden,
    TokenNotFound,
)
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import (
    Allocation,
    AuditEvent,
    Budget,
    CapChange,
    ChainHead,
    ChainVerification,
    Dataset,
    DatasetSpending,
    DebitResult,
    IssuedToken,
    Outcome,
    Principal,
    PublishCharge,
    PublishSpend,
    Reconciliation,
    ReleasePage,
    Requester,
    RequestInfo,
    Role,
    SpendingLine,
    SpendingReport,
    StoredRelease,
    TokenInfo,
)
from dpgate_server.ledger.sqlite import SqliteStorage
from dpgate_server.ledger.storage import LedgerStorage, StorageTransaction
from dpgate_server.ledger.transparency import TransparencyReport
from dpgate_server.ledger.unauthenticated import UnauthenticatedFlusher, UnauthenticatedPolicy

if TYPE_CHECKING:
    from dpgate_server.ledger.postgres import PostgresStorage


def __getattr__(name: str) -> object:
    """`PostgresStorage` is imported on first use: psycopg loads only for a PostgreSQL ledger."""
    if name == "PostgresStorage":
        from dpgate_server.ledger.postgres import PostgresStorage  # noqa: PLC0415

        return PostgresStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Allocation",
    "AllocationBelowSpent",
    "AllocationNotFound",
    "AlreadyExists",
    "AuditEvent",
    "Budget",
    "BudgetExhausted",
    "CapBelowAllocated",
    "CapBelowSpent",
    "CapChange",
    "ChainHead",
    "ChainVerification",
    "Dataset",
    "DatasetSpending",
    "DebitResult",
    "ExpiryInThePast",
    "IdempotencyConflict",
    "InvalidAmount",
    "InvalidTokenRequest",
    "IssuedToken",
    "Ledger",
    "LedgerAdmin",
    "LedgerBusy",
    "LedgerError",
    "LedgerSchemaError",
    "LedgerStorage",
    "LedgerUnavailable",
    "MissingPurpose",
    "MissingReason",
    "NotFound",
    "Outcome",
    "PostgresStorage",
    "Principal",
    "PublishCharge",
    "PublishSpend",
    "Reconciliation",
    "ReleaseKeyConflict",
    "ReleaseNotFound",
    "ReleasePage",
    "RequestInfo",
    "Requester",
    "RequesterDisabled",
    "RequesterNotFound",
    "Role",
    "SelfGrantForbidden",
    "SpendingLine",
    "SpendingReport",
    "SqliteStorage",
    "StorageTransaction",
    "StoredRelease",
    "TokenInfo",
    "TokenNotFound",
    "TransparencyReport",
    "UnauthenticatedFlusher",
    "UnauthenticatedPolicy",
]
