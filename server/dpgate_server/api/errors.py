"""The one table from domain errors to gRPC status codes, with `google.rpc.ErrorInfo`.

Servicers never choose a status code: they let domain errors propagate, and the
`audited` decorator maps them here and writes the audit event. Anything not in the table
is a bug: logged with a request id and answered INTERNAL with that id, no detail.

| domain error                              | status              | reason                   |
|-------------------------------------------|---------------------|--------------------------|
| InvalidQuery (UNKNOWN_DATASET)            | NOT_FOUND           | UNKNOWN_DATASET          |
| InvalidQuery (any other reason)           | INVALID_ARGUMENT    | its reason, with field   |
| BadRequestError                           | INVALID_ARGUMENT    | its reason, with field   |
| ledger BudgetExhausted                    | RESOURCE_EXHAUSTED  | BUDGET_EXHAUSTED         |
| ledger IdempotencyConflict                | INVALID_ARGUMENT    | IDEMPOTENCY_KEY_REUSED   |
| ledger InvalidAmount                      | INVALID_ARGUMENT    | BAD_AMOUNT               |
| ledger InvalidTokenRequest                | INVALID_ARGUMENT    | BAD_TOKEN_REQUEST        |
| ledger MissingReason                      | INVALID_ARGUMENT    | REASON_REQUIRED          |
| ledger AllocationBelowSpent/CapBelowSpent | FAILED_PRECONDITION | BELOW_SPENT              |
| ledger SelfGrantForbidden                 | PERMISSION_DENIED   | ROLE_FORBIDDEN           |
| ledger RequesterDisabled                  | PERMISSION_DENIED   | REQUESTER_DISABLED       |
| ledger NotFound, DatasetNotFoundError     | NOT_FOUND           | NOT_FOUND / DATASET_...  |
| UnknownPublicTableError                   | NOT_FOUND           | TABLE_NOT_FOUND          |
| ledger AlreadyExists                      | ALREADY_EXISTS      | ALREADY_EXISTS           |
| ledger LedgerBusy, PoolOverloaded         | UNAVAILABLE         | OVERLOADED (retry hint)  |
| ledger LedgerUnavailable (database down)  | UNAVAILABLE         | LEDGER_UNAVAILABLE (hint)|
| PoolClosed (shutting down)                | UNAVAILABLE         | OVERLOADED (retry hint)  |
| QueryDeadlineExceeded                     | DEADLINE_EXCEEDED   | QUERY_TIMEOUT            |
| WorkerFailed (out of memory, crash)       | INTERNAL            | WORKER_FAILED            |
| NotYetAvailableError                      | UNIMPLEMENTED       | NOT_IMPLEMENTED          |
| GovernanceError INVALID (bad extract)     | INVALID_ARGUMENT    | e.g. EXTRACT_REJECTED    |
| GovernanceError FORBIDDEN (other practice)| PERMISSION_DENIED   | PRACTICE_FORBIDDEN       |
| GovernanceError PRECONDITION (no consent) | FAILED_PRECONDITION | e.g. CONSENT_WITHDRAWN   |
| anything else (CostMismatchError, ...)    | INTERNAL            | INTERNAL (request id)    |
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol, TypeVar, cast

import grpc
from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from dpgate_server import execution
from dpgate_server.api.call_context import current_call
from dpgate_server.governance.errors import GovernanceError, Refusal
from dpgate_server.ledger import errors as ledger_errors
from dpgate_server.ledger.model import Outcome
from dpgate_server.queries.errors import InvalidQuery, Reason
from dpgate_server.spend import describe, plain, units_to_decimal
from dpgate_server.store.catalog import UnknownPublicTableError
from dpgate_server.store.store import DatasetNotFoundError

ERROR_DOMAIN = "dpgate.v1"
_log = logging.getLogger(__name__)


class BadRequestError(Exception):
    """A request the API layer itself refuses (malformed before any domain call).

    A plain exception, not a frozen dataclass: Python sets `__traceback__` on exceptions
    as they propagate (through `with` blocks too), which a frozen instance refuses.
    """

    def __init__(self, reason: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field = field


class NotYetAvailableError(Exception):
    """An RPC in the contract whose implementation has not landed yet."""

    def __init__(self, rpc: str, missing: str) -> None:
        super().__init__(f"{rpc} is not implemented yet: it needs {missing}")
        self.rpc = rpc
        self.missing = missing


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """What the client receives for an error, and the audit outcome it records."""

    code: grpc.StatusCode
    reason: str
    message: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    outcome: Outcome | None = Outcome.INVALID
    """None when the domain already wrote the event (a budget refusal is audited by debit)."""


def answer_for(exc: BaseException, request_id: str) -> ErrorAnswer:  # noqa: PLR0911 - a table
    """The status, reason, message and audit outcome for `exc` (the module table)."""
    code = grpc.StatusCode
    if isinstance(exc, InvalidQuery):
        status = code.NOT_FOUND if exc.reason is Reason.UNKNOWN_DATASET else code.INVALID_ARGUMENT
        return ErrorAnswer(status, exc.reason.value, exc.message, {"field": exc.field})
    if isinstance(exc, BadRequestError):
        meta = {"field": exc.field} if exc.field else {}
        return ErrorAnswer(code.INVALID_ARGUMENT, exc.reason, exc.message, meta)
    if isinstance(exc, ledger_errors.BudgetExhausted):
        return _budget_answer(exc)
    if isinstance(exc, ledger_errors.LedgerError | DatasetNotFoundError | UnknownPublicTableError):
        return _lookup_or_ledger_answer(exc)
    if isinstance(exc, execution.ExecutionError):
        return _execution_answer(exc, request_id)
    if isinstance(exc, GovernanceError):
        return _governance_answer(exc)
    if isinstance(exc, NotYetAvailableError):
        return ErrorAnswer(code.UNIMPLEMENTED, "NOT_IMPLEMENTED", str(exc), {}, Outcome.INVALID)
    _log.error("unexpected error (request id %s)", request_id, exc_info=exc)
    return ErrorAnswer(
        code.INTERNAL,
        "INTERNAL",
        f"internal error; nothing was charged. Quote request id {request_id} to the operator",
        {"request_id": request_id},
        Outcome.FAILED,
    )


def _governance_answer(exc: GovernanceError) -> ErrorAnswer:
    status = {
        Refusal.INVALID: (grpc.StatusCode.INVALID_ARGUMENT, Outcome.INVALID),
        Refusal.FORBIDDEN: (grpc.StatusCode.PERMISSION_DENIED, Outcome.DENIED),
        Refusal.PRECONDITION: (grpc.StatusCode.FAILED_PRECONDITION, Outcome.INVALID),
    }[exc.kind]
    return ErrorAnswer(status[0], exc.reason, exc.message, dict(exc.metadata), status[1])


def _budget_answer(exc: ledger_errors.BudgetExhausted) -> ErrorAnswer:
    requested = units_to_decimal(exc.requested_units)
    remaining = units_to_decimal(exc.remaining_units)
    accounting = exc.accounting or ""
    return ErrorAnswer(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "BUDGET_EXHAUSTED",
        f"the query costs {describe(exc.requested_units, accounting)} but only "
        f"{describe(exc.remaining_units, accounting)} remains of your allocation or the "
        "dataset's cap; nothing was charged. Spend less, or ask an administrator to top up",
        {
            "requested": plain(requested),
            "remaining": plain(remaining),
            "requested_nano_units": str(exc.requested_units),
            "remaining_nano_units": str(exc.remaining_units),
        },
        outcome=None,  # debit already wrote the refusal into the chain
    )


def _lookup_or_ledger_answer(exc: Exception) -> ErrorAnswer:
    code = grpc.StatusCode
    message = str(exc)
    if isinstance(exc, DatasetNotFoundError):
        return ErrorAnswer(
            code.NOT_FOUND,
            "DATASET_NOT_FOUND",
            f"no dataset {exc.args[0]!r}; ListDatasets shows the datasets available",
            {"dataset_id": str(exc.args[0])},
        )
    if isinstance(exc, UnknownPublicTableError):
        return ErrorAnswer(code.NOT_FOUND, "TABLE_NOT_FOUND", message)
    invalid, denied, le = Outcome.INVALID, Outcome.DENIED, ledger_errors
    table: list[tuple[type[Exception], grpc.StatusCode, str, Outcome]] = [
        (le.IdempotencyConflict, code.INVALID_ARGUMENT, "IDEMPOTENCY_KEY_REUSED", invalid),
        (le.InvalidAmount, code.INVALID_ARGUMENT, "BAD_AMOUNT", invalid),
        (le.InvalidTokenRequest, code.INVALID_ARGUMENT, "BAD_TOKEN_REQUEST", invalid),
        (le.MissingReason, code.INVALID_ARGUMENT, "REASON_REQUIRED", invalid),
        (le.AllocationBelowSpent, code.FAILED_PRECONDITION, "BELOW_SPENT", invalid),
        (le.CapBelowSpent, code.FAILED_PRECONDITION, "BELOW_SPENT", invalid),
        (le.SelfGrantForbidden, code.PERMISSION_DENIED, "ROLE_FORBIDDEN", denied),
        (le.RequesterDisabled, code.PERMISSION_DENIED, "REQUESTER_DISABLED", denied),
        (le.NotFound, code.NOT_FOUND, "NOT_FOUND", invalid),
        (le.AlreadyExists, code.ALREADY_EXISTS, "ALREADY_EXISTS", invalid),
    ]
    for error_type, status, reason, outcome in table:
        if isinstance(exc, error_type):
            return ErrorAnswer(status, reason, message, {}, outcome)
    if isinstance(exc, ledger_errors.LedgerBusy):
        return _overloaded("the ledger is busy; retry shortly", 1.0)
    if isinstance(exc, ledger_errors.LedgerUnavailable):
        return ledger_unavailable_answer(exc)
    return answer_for(RuntimeError(message), "ledger")  # pragma: no cover - a new ledger error


def _execution_answer(exc: execution.ExecutionError, request_id: str) -> ErrorAnswer:
    code = grpc.StatusCode
    if isinstance(exc, execution.PoolOverloaded):
        return _overloaded(str(exc), exc.retry_after_s)
    if isinstance(exc, execution.QueryDeadlineExceeded):
        message = (
            f"the query ran longer than {exc.timeout_s:g} s and was cancelled; nothing was "
            "charged. Ask for fewer cells or a narrower filter"
        )
        return ErrorAnswer(code.DEADLINE_EXCEEDED, "QUERY_TIMEOUT", message, {}, Outcome.FAILED)
    if isinstance(exc, execution.PoolClosed):
        return _overloaded("the server is shutting down; retry on another replica or later", 5.0)
    message = f"{exc}; nothing was charged. Quote request id {request_id} to the operator"
    if not isinstance(exc, execution.WorkerFailed):
        _log.error("query execution failed (request id %s)", request_id, exc_info=exc)
        message = f"internal error; nothing was charged. Quote request id {request_id}"
    return ErrorAnswer(
        code.INTERNAL, "WORKER_FAILED", message, {"request_id": request_id}, Outcome.FAILED
    )


LEDGER_RETRY_AFTER_SECONDS = 2.0


def ledger_unavailable_answer(exc: ledger_errors.LedgerUnavailable) -> ErrorAnswer:
    """UNAVAILABLE/LEDGER_UNAVAILABLE: the ledger's database is down; nothing was charged.

    Not audited (outcome None): the audit chain lives in that database. The caller sees no
    database detail; the operator's log gets it (without password).
    """
    _log.warning("ledger unavailable: %s", exc)
    return ErrorAnswer(
        grpc.StatusCode.UNAVAILABLE,
        "LEDGER_UNAVAILABLE",
        "the privacy ledger cannot be reached; nothing was charged. Retry in a few seconds"
        " (a retry with the same idempotency key is never charged twice)",
        {"retry_after_seconds": f"{LEDGER_RETRY_AFTER_SECONDS:.3f}"},
        outcome=None,
    )


def _overloaded(message: str, retry_after_seconds: float) -> ErrorAnswer:
    return ErrorAnswer(
        grpc.StatusCode.UNAVAILABLE,
        "OVERLOADED",
        message,
        {"retry_after_seconds": f"{retry_after_seconds:.3f}"},
        Outcome.FAILED,
    )


MAX_MESSAGE_BYTES = 1024
"""Longest error message sent (UTF-8 bytes); longer ones are cut with "..."."""
MAX_METADATA_VALUE_BYTES = 128
"""Longest ErrorInfo metadata value sent; likewise cut."""


def abort(context: grpc.ServicerContext, answer: ErrorAnswer) -> NoReturn:
    """End the RPC with `answer` as a rich status (code, message and ErrorInfo).

    The message and metadata travel in trailing metadata, which gRPC clients refuse past
    8-16 KiB (the caller then sees RESOURCE_EXHAUSTED "Stream removed" instead of our
    answer). Messages quote what the requester sent, which can be any size, so both are
    bounded here, once for every error.
    """
    metadata = {k: _bounded(v, MAX_METADATA_VALUE_BYTES) for k, v in answer.metadata.items()}
    info = error_details_pb2.ErrorInfo(reason=answer.reason, domain=ERROR_DOMAIN, metadata=metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    message = _bounded(answer.message, MAX_MESSAGE_BYTES)
    status = status_pb2.Status(code=answer.code.value[0], message=message, details=[detail])
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


def _bounded(text: str, limit: int) -> str:
    """`text` if its UTF-8 form fits in `limit` bytes, else its longest prefix that does + "..."."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode("utf-8", errors="ignore") + "..."


class AuditSink(Protocol):
    """Where failed requests are recorded (the ledger)."""

    def record_event(self, request: Any, outcome: Outcome, **kwargs: Any) -> Any: ...


_Method = TypeVar("_Method", bound=Callable[..., Any])


def audited(*, record_success: bool) -> Callable[[_Method], _Method]:
    """Decorate a servicer method: map errors to statuses and write the audit event.

    `record_success` is True for RPCs whose domain call writes no event of its own (reads);
    False where the domain records success itself (debit, admin changes) or the servicer
    does (a free repeat). Failures are always recorded here, unless the domain already did.
    The servicer instance must have a `_ledger` attribute.
    """

    def decorate(method: _Method) -> _Method:
        def succeed(self: Any) -> None:
            if record_success:
                self._ledger.record_event(current_call().request_info(), Outcome.ANSWERED)

        def fail(
            self: Any, context: grpc.ServicerContext, exc: Exception, request: Any
        ) -> NoReturn:
            call = current_call()
            answer = answer_for(exc, call.request_id)
            if answer.outcome is not None:
                try:
                    self._ledger.record_event(
                        call.request_info(_request_text(request)),
                        answer.outcome,
                        detail=answer.reason,
                    )
                except Exception:  # the refusal must still reach the caller
                    _log.exception("could not audit request %s", call.request_id)
            abort(context, answer)

        @functools.wraps(method)
        def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            try:
                reply = method(self, request, context)
            except Exception as exc:
                fail(self, context, exc, request)
            succeed(self)
            return reply

        @functools.wraps(method)
        def streaming(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from method(self, request, context)
            except Exception as exc:
                fail(self, context, exc, request)
            succeed(self)

        wrapper = streaming if inspect.isgeneratorfunction(method) else unary
        return cast(_Method, wrapper)

    return decorate


MAX_AUDITED_REQUEST_CHARS = 4096


def _request_text(request: Any) -> str:
    """What a refused request asked for, for the audit log (bounded; streams are not read)."""
    if not isinstance(request, Message):
        return ""
    text = json_format.MessageToJson(request, indent=None, sort_keys=True)
    return text[:MAX_AUDITED_REQUEST_CHARS]
