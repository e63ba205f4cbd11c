"""Why a request was refused: the one catalogue of reasons, and the base of domain errors.

Every error that dpgate raises on purpose is a `DomainError` and carries exactly one
`ErrorReason`. The reasons are the names of the `dpgate.v1.ErrorReason` enum in
`proto/dpgate/v1/errors.proto` (which says what each one means) without its
`ERROR_REASON_` prefix, and they travel as the `google.rpc.ErrorInfo` reason string. A
test checks that this enum and the proto's agree, and the API layer's table
(`dpgate_server.api.errors`) gives every reason its one gRPC status code.

This module sits in the lowest layer and imports no gRPC or protobuf: the ledger, the
store, governance, the query engine and the worker pool all raise these errors without
knowing how they reach the wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum, auto


class ErrorReason(StrEnum):
    """The machine-readable reason of a refusal; stable strings, part of the public API.

    Each value is its own name (`ErrorReason.BAD_TOKEN == "BAD_TOKEN"`), the string the
    wire carries.
    """

    @staticmethod
    def _generate_next_value_(name: str, start: int, count: int, last_values: list[str]) -> str:
        return name

    # the request itself (INVALID_ARGUMENT unless noted)
    MALFORMED_REQUEST = auto()
    REQUEST_STREAM_ENDED = auto()
    MESSAGE_TOO_LARGE = auto()
    MISSING_FIELD = auto()
    FIELD_TOO_LONG = auto()
    BAD_VALUE = auto()
    BAD_FORMAT = auto()
    BAD_PAGE_TOKEN = auto()
    BAD_IDEMPOTENCY_KEY = auto()
    IDEMPOTENCY_KEY_REUSED = auto()
    BAD_ROLE = auto()
    BAD_TIME = auto()
    ACCOUNTING_MISMATCH = auto()
    BAD_AMOUNT = auto()
    BAD_TOKEN_REQUEST = auto()
    REASON_REQUIRED = auto()
    BAD_SIGNED_HEAD = auto()
    # queries (INVALID_ARGUMENT); ErrorInfo metadata `field` names the culprit
    UNKNOWN_COLUMN = auto()
    PRIVATE_COLUMN = auto()
    NOT_GROUPABLE = auto()
    NOT_FILTERABLE = auto()
    DUPLICATE_COLUMN = auto()
    BAD_OPERATOR = auto()
    TOO_MANY_VALUES = auto()
    TOO_MANY_FILTERS = auto()
    TOO_MANY_CELLS = auto()
    BAD_AGGREGATE = auto()
    NOT_SUMMABLE = auto()
    BAD_SPEND = auto()
    WRONG_ACCOUNTING = auto()
    BAD_EPSILON = auto()
    BAD_RHO = auto()
    BAD_ACCURACY = auto()
    UNREACHABLE_ACCURACY = auto()
    BAD_CONFIDENCE = auto()
    BAD_CONTRIBUTIONS = auto()
    # budget
    BUDGET_EXHAUSTED = auto()
    BELOW_SPENT = auto()
    # who may call (UNAUTHENTICATED, PERMISSION_DENIED)
    BAD_TOKEN = auto()
    ROLE_FORBIDDEN = auto()
    SELF_GRANT_FORBIDDEN = auto()
    REQUESTER_DISABLED = auto()
    PRACTICE_FORBIDDEN = auto()
    # what does not exist (NOT_FOUND) or exists already (ALREADY_EXISTS)
    DATASET_NOT_FOUND = auto()
    TABLE_NOT_FOUND = auto()
    REQUESTER_NOT_FOUND = auto()
    ALLOCATION_NOT_FOUND = auto()
    RELEASE_NOT_FOUND = auto()
    TOKEN_NOT_FOUND = auto()
    ALREADY_EXISTS = auto()
    # data governance: uploads, opt-outs, consent, publishing
    MISSING_HEADER = auto()
    UNEXPECTED_HEADER = auto()
    EXTRACT_TRUNCATED = auto()
    EXTRACT_TOO_LARGE = auto()
    EXTRACT_REJECTED = auto()
    OPT_OUT_LIST_REJECTED = auto()
    UNKNOWN_PRACTICE = auto()
    INSTRUCTION_REFERENCE_REQUIRED = auto()
    CONSENT_WITHDRAWN = auto()
    CONSENT_CHANGED = auto()
    KEY_MISMATCH = auto()
    PUBLISH_IN_PROGRESS = auto()
    STORAGE_FULL = auto()
    # the server's state (UNAVAILABLE: retry with the same idempotency key)
    OVERLOADED = auto()
    RATE_LIMITED = auto()
    LEDGER_UNAVAILABLE = auto()
    SHUTTING_DOWN = auto()
    # failures (nothing was charged)
    QUERY_TIMEOUT = auto()
    WORKER_FAILED = auto()
    INTERNAL = auto()
    NOT_IMPLEMENTED = auto()


class DomainError(Exception):
    """Base of every error dpgate raises on purpose; nothing was charged or changed.

    Subclasses set `reason` as a class attribute, or per instance when one class covers
    several reasons (`InvalidQuery`). A class that sets none is answered as INTERNAL,
    which leaks no detail (a test fails for any concrete error class without its own).

    Not a frozen dataclass: Python sets `__traceback__` on exceptions as they propagate.

    Attributes:
        reason: why, from the catalogue.
        message: what went wrong and what to change, safe to show the caller.
        metadata: facts for the caller (e.g. the field at fault), strings only.

    `str(error)` is the message, or a `detail` for the operator's log only when the
    message must hide it (a database error, say).
    """

    reason: ErrorReason = ErrorReason.INTERNAL

    def __init__(
        self,
        message: str = "",
        metadata: Mapping[str, str] | None = None,
        *,
        detail: str | None = None,
    ) -> None:
        # str(error) is `detail` when given: more than the caller may see, for the log.
        super().__init__(message if detail is None else detail)
        self.message = message
        # A plain dict: query workers pickle these errors' attributes across processes.
        self.metadata: Mapping[str, str] = dict(metadata or {})


class DatasetNotFoundError(DomainError, LookupError):
    """No dataset (or no such version of it) has this id: in the store or in the ledger.

    One error for every place that looks a dataset up, so a caller is told the same thing
    whichever component noticed first.
    """

    reason = ErrorReason.DATASET_NOT_FOUND

    def __init__(self, dataset_id: str, version: str | None = None) -> None:
        name = dataset_id if version is None else f"{dataset_id}/{version}"
        super().__init__(
            f"no dataset {name!r}; ListDatasets shows the datasets available",
            {"dataset_id": dataset_id},
        )
        self.dataset_id = dataset_id
