"""The one exception tree of the client, documented in one place.

Every failed call raises a `DpgateError`, never a raw `grpc.RpcError`, so a planner's
notebook catches `BudgetExhaustedError` rather than decoding status codes. The class is
chosen by the server's `ErrorInfo` reason first (`ErrorReason`, the catalogue the server
uses), then by the status code:

```
DpgateError
+-- InvalidRequestError        INVALID_ARGUMENT: a request refused as sent (uploads, admin
|   |                          calls, ...); `field` names the culprit; also gRPC's own
|   |                          RESOURCE_EXHAUSTED for a message over the size limit
|   |                          (reason MESSAGE_TOO_LARGE)
|   +-- InvalidQueryError      the same for a query (PreviewQuery, RunQuery)
+-- BudgetExhaustedError       RESOURCE_EXHAUSTED / BUDGET_EXHAUSTED: nothing was charged
+-- OverloadedError            UNAVAILABLE / OVERLOADED or RATE_LIMITED: the server is
|                              busy; retry after `retry_after` seconds
+-- ServerUnavailableError     UNAVAILABLE without a dpgate reason (no server, network),
|                              or LEDGER_UNAVAILABLE, SHUTTING_DOWN; also ConnectionError
+-- DeadlineExceededError      DEADLINE_EXCEEDED: the call's timeout passed, or the query
|                              ran too long (QUERY_TIMEOUT); also TimeoutError
+-- AuthenticationError        UNAUTHENTICATED: no, bad, expired or revoked token
+-- PermissionDeniedError      PERMISSION_DENIED: this token may not make this call
+-- NotFoundError              NOT_FOUND: unknown dataset, table, requester, release, ...
+-- NotImplementedYetError     UNIMPLEMENTED: the server does not offer this RPC yet
+-- PreconditionFailedError    FAILED_PRECONDITION: e.g. an allocation below its spend
+-- AlreadyExistsError         ALREADY_EXISTS: creating what exists already
+-- ServerError                anything else; quote `request_id` to the operator
```

`Client` retries `OverloadedError` and `ServerUnavailableError` (and only those), with
exponential backoff and jitter and the same idempotency key, so a retried query is
charged once; the last error is raised when the retries are spent.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from dpgate_shared.reasons import ErrorReason

ERROR_DOMAIN = "dpgate.v1"
"""The ErrorInfo domain of dpgate's own refusals."""


class DpgateError(Exception):
    """Base of every error the client raises.

    Attributes:
        message: what went wrong and what to change, from the server.
        reason: the machine-readable reason (`google.rpc.ErrorInfo.reason`), e.g.
            "UNKNOWN_COLUMN"; empty when the server sent none.
        metadata: extra facts from the server (e.g. the field at fault).
        code: the gRPC status code name, e.g. "INVALID_ARGUMENT".
    """

    def __init__(
        self,
        message: str,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        code: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.code = code


class InvalidRequestError(DpgateError):
    """The request was refused as sent; nothing changed. `field` names the culprit."""

    @property
    def field(self) -> str:
        return self.metadata.get("field", "")


class InvalidQueryError(InvalidRequestError):
    """A query (preview or run) was refused before anything was spent."""


class BudgetExhaustedError(DpgateError):
    """The query would spend more than remains; nothing was charged."""

    @property
    def requested(self) -> Decimal | None:
        return _decimal(self.metadata.get("requested"))

    @property
    def remaining(self) -> Decimal | None:
        return _decimal(self.metadata.get("remaining"))


class OverloadedError(DpgateError):
    """The server is busy (not a budget refusal); retry after `retry_after` seconds."""

    @property
    def retry_after(self) -> float | None:
        return _seconds(self.metadata.get("retry_after_seconds"))


class ServerUnavailableError(DpgateError, ConnectionError):
    """No dpgate server answered (not running, unreachable), or it cannot serve now.

    Also a builtin `ConnectionError`. The reason is empty when gRPC itself gave up
    (nothing reached a server); LEDGER_UNAVAILABLE or SHUTTING_DOWN when the server said
    so. Nothing was charged by the refused attempt; a retry with the same idempotency key
    is charged at most once.
    """

    @property
    def retry_after(self) -> float | None:
        """The server's hint, in seconds, when it sent one."""
        return _seconds(self.metadata.get("retry_after_seconds"))


class DeadlineExceededError(DpgateError, TimeoutError):
    """The call's timeout passed, or the server cancelled a query that ran too long.

    Also a builtin `TimeoutError`. With reason QUERY_TIMEOUT nothing was charged; with
    none (the client's own timeout), a query may have been answered and charged: repeat it
    with the same idempotency key to receive that answer without a second charge.
    """


class AuthenticationError(DpgateError):
    """The token is missing, unknown, expired or revoked."""


class PermissionDeniedError(DpgateError):
    """The token's role may not make this call."""


class NotFoundError(DpgateError):
    """The dataset, table, requester or release does not exist."""


class NotImplementedYetError(DpgateError):
    """The server's contract has this RPC but its implementation has not landed."""


class PreconditionFailedError(DpgateError):
    """The change conflicts with the current state (e.g. a cap below what is spent)."""


class AlreadyExistsError(DpgateError):
    """The requester, dataset or allocation being created already exists."""


class ServerError(DpgateError):
    """An unexpected server-side failure; `request_id` identifies it in the server's logs."""

    @property
    def request_id(self) -> str:
        return self.metadata.get("request_id", "")


_BY_REASON: dict[str, type[DpgateError]] = {
    ErrorReason.BUDGET_EXHAUSTED: BudgetExhaustedError,
    ErrorReason.OVERLOADED: OverloadedError,
    ErrorReason.RATE_LIMITED: OverloadedError,
    ErrorReason.LEDGER_UNAVAILABLE: ServerUnavailableError,
    ErrorReason.SHUTTING_DOWN: ServerUnavailableError,
    ErrorReason.QUERY_TIMEOUT: DeadlineExceededError,
}
"""Reasons whose class differs from what their status code alone would give."""

_BY_CODE: dict[grpc.StatusCode, type[DpgateError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: InvalidRequestError,  # gRPC's message size limit
    grpc.StatusCode.UNAVAILABLE: ServerUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNIMPLEMENTED: NotImplementedYetError,
    grpc.StatusCode.FAILED_PRECONDITION: PreconditionFailedError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
}

RETRYABLE: tuple[type[DpgateError], ...] = (OverloadedError, ServerUnavailableError)
"""The errors a retry may cure; never a budget or invalid-input refusal."""


def from_rpc_error(error: grpc.RpcError, *, query: bool = False) -> DpgateError:
    """The client exception for a failed call, with the server's ErrorInfo unpacked.

    `query` says the call was a query (PreviewQuery, RunQuery): a refused request is
    then an `InvalidQueryError`, otherwise an `InvalidRequestError`.
    """
    code: grpc.StatusCode = error.code()
    message: str = error.details() or code.name
    reason, metadata = _error_info(error)
    cls = _BY_REASON.get(reason) or _BY_CODE.get(code, ServerError)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and cls is InvalidRequestError:
        # gRPC itself answers RESOURCE_EXHAUSTED for a message over the size limit; that is
        # a request to shrink, never a budget refusal.
        reason = reason or ErrorReason.MESSAGE_TOO_LARGE.value
    if cls is InvalidRequestError and query:
        cls = InvalidQueryError
    return cls(message, reason=reason, metadata=metadata, code=code.name)


def _error_info(error: grpc.RpcError) -> tuple[str, dict[str, str]]:
    """The reason and metadata of dpgate's ErrorInfo, or ("", {}) when there is none."""
    status = rpc_status.from_call(error)
    if status is None:
        return "", {}
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
            return info.reason, dict(info.metadata)
    return "", {}


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _seconds(value: str | None) -> float | None:
    return None if value is None else float(value)
