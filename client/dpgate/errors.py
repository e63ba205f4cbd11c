"""The one exception tree of the client, documented in one place.

Every failed call raises a `DpgateError`, never a raw `grpc.RpcError`, so a planner's
notebook catches `BudgetExhaustedError` rather than decoding status codes:

| exception               | status              | when                                        |
|-------------------------|---------------------|---------------------------------------------|
| InvalidQueryError       | INVALID_ARGUMENT    | the request is malformed or not allowed     |
| BudgetExhaustedError    | RESOURCE_EXHAUSTED  | the spend exceeds what remains              |
| InvalidQueryError       | RESOURCE_EXHAUSTED  | the request is over the server's message    |
|                         | (MESSAGE_TOO_LARGE) | size limit (gRPC's own refusal, no budget)  |
| OverloadedError         | UNAVAILABLE         | the server is busy; retry after a while     |
| AuthenticationError     | UNAUTHENTICATED     | no, bad, expired or revoked token           |
| PermissionDeniedError   | PERMISSION_DENIED   | the token's role may not call this          |
| NotFoundError           | NOT_FOUND           | unknown dataset, table, requester, release  |
| NotImplementedYetError  | UNIMPLEMENTED       | the server does not offer this RPC yet      |
| PreconditionFailedError | FAILED_PRECONDITION | e.g. reducing an allocation below its spend |
| AlreadyExistsError      | ALREADY_EXISTS      | creating what exists already                |
| ServerError             | anything else       | quote `request_id` to the operator          |
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


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


class InvalidQueryError(DpgateError):
    """The request was refused before anything was spent; `field` names the culprit."""

    @property
    def field(self) -> str:
        return self.metadata.get("field", "")


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
        value = self.metadata.get("retry_after_seconds")
        return None if value is None else float(value)


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


BUDGET_EXHAUSTED = "BUDGET_EXHAUSTED"
MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"

_BY_CODE: dict[grpc.StatusCode, type[DpgateError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidQueryError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: BudgetExhaustedError,
    grpc.StatusCode.UNAVAILABLE: OverloadedError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNIMPLEMENTED: NotImplementedYetError,
    grpc.StatusCode.FAILED_PRECONDITION: PreconditionFailedError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
}


def from_rpc_error(error: grpc.RpcError) -> DpgateError:
    """The client exception for a failed call, with the server's ErrorInfo unpacked."""
    code: grpc.StatusCode = error.code()
    message: str = error.details() or code.name
    reason, metadata = "", {}
    status = rpc_status.from_call(error)
    if status is not None:
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                reason, metadata = info.reason, dict(info.metadata)
    cls = _BY_CODE.get(code, ServerError)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and reason != BUDGET_EXHAUSTED:
        # gRPC itself answers RESOURCE_EXHAUSTED for a message over the size limit; that is
        # a request to shrink, never a budget refusal.
        cls, reason = InvalidQueryError, reason or MESSAGE_TOO_LARGE
    return cls(message, reason=reason, metadata=metadata, code=code.name)


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)
