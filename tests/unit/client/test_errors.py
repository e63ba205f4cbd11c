"""The client's exception tree: status codes and ErrorInfo reasons to exception classes."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from dpgate import BudgetExhaustedError, InvalidQueryError
from dpgate.errors import from_rpc_error


class FakeRpcError(grpc.RpcError):
    """What a failed call raises: a code, details and (maybe) a rich status trailer."""

    def __init__(self, code: grpc.StatusCode, details: str, reason: str = "") -> None:
        self._code, self._details = code, details
        self._trailer: tuple[tuple[str, bytes], ...] = ()
        if reason:
            detail = any_pb2.Any()
            detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="dpgate.v1"))
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
    converted = from_rpc_error(error)
    assert isinstance(converted, InvalidQueryError)
    assert not isinstance(converted, BudgetExhaustedError)
    assert converted.reason == "MESSAGE_TOO_LARGE"
    assert converted.code == "RESOURCE_EXHAUSTED"
