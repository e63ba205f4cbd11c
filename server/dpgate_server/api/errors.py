"""The one table from domain errors to gRPC status codes, with `google.rpc.ErrorInfo`.

Servicers never choose a status code themselves: they let domain errors propagate and
`translate_errors` maps them here. Anything not in the table is a bug: it is logged with
a request id and answered `INTERNAL` with that id and no detail, so internals never leak.

| domain error             | status            | reason              |
|--------------------------|-------------------|---------------------|
| DatasetNotFoundError     | NOT_FOUND         | DATASET_NOT_FOUND   |
| UnknownPublicTableError  | NOT_FOUND         | TABLE_NOT_FOUND     |
| BadRequestError          | INVALID_ARGUMENT  | its own reason      |
| NotYetAvailableError     | UNIMPLEMENTED     | NOT_IMPLEMENTED     |
| anything else            | INTERNAL          | INTERNAL            |
"""

from __future__ import annotations

import functools
import inspect
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from dpgate_server.data.catalog import UnknownPublicTableError
from dpgate_server.data.store import DatasetNotFoundError

ERROR_DOMAIN = "dpgate.v1"
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BadRequestError(Exception):
    """A request the API layer itself can refuse (malformed before any domain call)."""

    reason: str
    message: str
    field: str = ""

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class NotYetAvailableError(Exception):
    """An RPC in the contract whose implementation has not landed yet."""

    rpc: str
    missing: str

    def __str__(self) -> str:
        return f"{self.rpc} is not implemented yet: it needs {self.missing}"


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """What the client receives for an error."""

    code: grpc.StatusCode
    reason: str
    message: str
    metadata: Mapping[str, str] = field(default_factory=dict)


def answer_for(exc: BaseException, request_id: str) -> ErrorAnswer:
    """The status, reason and message for `exc` (the table in the module docstring)."""
    if isinstance(exc, DatasetNotFoundError):
        return ErrorAnswer(
            grpc.StatusCode.NOT_FOUND,
            "DATASET_NOT_FOUND",
            f"no dataset {exc.args[0]!r}; ListDatasets shows the datasets available",
            {"dataset_id": str(exc.args[0])},
        )
    if isinstance(exc, UnknownPublicTableError):
        return ErrorAnswer(grpc.StatusCode.NOT_FOUND, "TABLE_NOT_FOUND", str(exc))
    if isinstance(exc, BadRequestError):
        meta = {"field": exc.field} if exc.field else {}
        return ErrorAnswer(grpc.StatusCode.INVALID_ARGUMENT, exc.reason, exc.message, meta)
    if isinstance(exc, NotYetAvailableError):
        return ErrorAnswer(grpc.StatusCode.UNIMPLEMENTED, "NOT_IMPLEMENTED", str(exc))
    _log.exception("unexpected error (request id %s)", request_id, exc_info=exc)
    return ErrorAnswer(
        grpc.StatusCode.INTERNAL,
        "INTERNAL",
        f"internal error; quote request id {request_id} to the operator",
        {"request_id": request_id},
    )


def abort(context: grpc.ServicerContext, answer: ErrorAnswer) -> NoReturn:
    """End the RPC with `answer` as a rich status (code, message and ErrorInfo)."""
    info = error_details_pb2.ErrorInfo(
        reason=answer.reason, domain=ERROR_DOMAIN, metadata=dict(answer.metadata)
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(
        code=_CODE_NUMBERS[answer.code], message=answer.message, details=[detail]
    )
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


_CODE_NUMBERS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND: code_pb2.NOT_FOUND,
    grpc.StatusCode.UNIMPLEMENTED: code_pb2.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL: code_pb2.INTERNAL,
    grpc.StatusCode.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE: code_pb2.UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED: code_pb2.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    grpc.StatusCode.DEADLINE_EXCEEDED: code_pb2.DEADLINE_EXCEEDED,
}

_Method = TypeVar("_Method", bound=Callable[..., Any])


def translate_errors(method: _Method) -> _Method:
    """Decorate a servicer method (unary or streaming) so domain errors become statuses."""

    def fail(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
        request_id = uuid.uuid4().hex[:16]
        abort(context, answer_for(exc, request_id))

    @functools.wraps(method)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:
            fail(context, exc)

    @functools.wraps(method)
    def streaming(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from method(self, request, context)
        except Exception as exc:
            fail(context, exc)

    wrapper = streaming if inspect.isgeneratorfunction(method) else unary
    return cast(_Method, wrapper)
