"""The client's exception tree: status codes and ErrorInfo reasons to exception classes."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from dpgate import (
    AuthenticationError,
    BudgetExhaustedError,
    DeadlineExceededError,
    DpgateError,
    ErrorReason,
    InvalidQueryError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    ServerError,
    ServerUnavailableError,
)
from dpgate.errors import from_rpc_error
from dpgate_proto.v1 import errors_pb2


class FakeRpcError(grpc.RpcError):
    """What a failed call raises: a code, details and (maybe) a rich status trailer."""

    def __init__(
        self, code: grpc.StatusCode, details: str, reason: str = "", domain: str = "dpgate.v1"
    ) -> None:
        self._code, self._details = code, details
        self._trailer: tuple[tuple[str, bytes], ...] = ()
        if reason:
            detail = any_pb2.Any()
            detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain))
            status = status_pb2.Status(code=code.value[0], message=details, details=[detail])
            self._trailer = (("grpc-status-details-bin", status.SerializeToString()),)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self._trailer


def test_a_budget_refusal_is_budget_exhausted() -> None:
    error = FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "costs 1", "BUDGET_EXHAUSTED")
    assert isinstance(from_rpc_error(error), BudgetExhaustedError)


def test_an_oversized_message_is_an_invalid_request_not_a_budget_refusal() -> None:
    error = FakeRpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "SERVER: Received message larger than max (5015035 vs. 4194304)",
    )
    converted = from_rpc_error(error, query=True)
    assert isinstance(converted, InvalidQueryError)
    assert not isinstance(converted, BudgetExhaustedError)
    assert converted.reason == "MESSAGE_TOO_LARGE"
    assert converted.code == "RESOURCE_EXHAUSTED"


def test_the_client_catalogue_is_the_proto_enum() -> None:
    values = errors_pb2.DESCRIPTOR.enum_types_by_name["ErrorReason"].values
    proto = [v.name.removeprefix("ERROR_REASON_") for v in values][1:]  # after UNSPECIFIED
    assert proto == [reason.value for reason in ErrorReason]


Code = grpc.StatusCode


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        # by reason first
        (Code.UNAVAILABLE, "OVERLOADED", OverloadedError),
        (Code.UNAVAILABLE, "RATE_LIMITED", OverloadedError),
        (Code.UNAVAILABLE, "LEDGER_UNAVAILABLE", ServerUnavailableError),
        (Code.UNAVAILABLE, "SHUTTING_DOWN", ServerUnavailableError),
        (Code.DEADLINE_EXCEEDED, "QUERY_TIMEOUT", DeadlineExceededError),
        (Code.RESOURCE_EXHAUSTED, "BUDGET_EXHAUSTED", BudgetExhaustedError),
        # then by code
        (Code.UNAVAILABLE, "", ServerUnavailableError),
        (Code.UNAVAILABLE, "A_REASON_FROM_THE_FUTURE", ServerUnavailableError),
        (Code.DEADLINE_EXCEEDED, "", DeadlineExceededError),
        (Code.INVALID_ARGUMENT, "BAD_TIME", InvalidRequestError),
        (Code.UNAUTHENTICATED, "BAD_TOKEN", AuthenticationError),
        (Code.NOT_FOUND, "DATASET_NOT_FOUND", NotFoundError),
        (Code.INTERNAL, "INTERNAL", ServerError),
        (Code.CANCELLED, "", ServerError),
    ],
)
def test_the_reason_chooses_the_exception_then_the_code(
    code: grpc.StatusCode, reason: str, expected: type[DpgateError]
) -> None:
    converted = from_rpc_error(FakeRpcError(code, "what happened", reason))
    assert type(converted) is expected
    assert (converted.reason, converted.code, converted.message) == (
        reason,
        code.name,
        "what happened",
    )


def test_an_unreachable_server_is_a_connection_error_not_an_overload() -> None:
    error = FakeRpcError(Code.UNAVAILABLE, "failed to connect to all addresses")
    converted = from_rpc_error(error)
    assert isinstance(converted, ServerUnavailableError)
    assert isinstance(converted, ConnectionError)
    assert not isinstance(converted, OverloadedError)
    assert converted.reason == ""


def test_a_deadline_is_a_timeout_error() -> None:
    converted = from_rpc_error(FakeRpcError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded"))
    assert isinstance(converted, TimeoutError)
    with pytest.raises(TimeoutError):
        raise converted


def test_a_refused_request_is_a_query_error_only_for_a_query() -> None:
    refused = FakeRpcError(Code.INVALID_ARGUMENT, "bad", "MISSING_FIELD")
    other = from_rpc_error(refused)
    assert type(other) is InvalidRequestError
    query = from_rpc_error(refused, query=True)
    assert type(query) is InvalidQueryError
    assert isinstance(query, InvalidRequestError)


def test_an_error_info_of_another_domain_is_not_a_dpgate_reason() -> None:
    error = FakeRpcError(Code.UNAVAILABLE, "proxy busy", "OVERLOADED", domain="proxy.example")
    converted = from_rpc_error(error)
    assert type(converted) is ServerUnavailableError
    assert converted.reason == ""
