"""Why dpgate refused a request: the one catalogue of reasons, for client and server alike.

The names are those of the `dpgate.v1.ErrorReason` enum in `proto/dpgate/v1/errors.proto`
(which says what each one means) without its `ERROR_REASON_` prefix: the string a refused
call carries as its `google.rpc.ErrorInfo` reason. The server raises its domain errors with
these (`dpgate_server.vocabulary.errors`) and maps each to one gRPC status code; the client
exposes them as `dpgate.ErrorReason` and chooses its exception by them. A test checks that
this enum and the proto's agree, name for name and in order.
"""

from __future__ import annotations

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
    # added later (at the end, as in the proto)
    CAP_BELOW_ALLOCATED = auto()
    PUBLISH_CANCELLED = auto()
