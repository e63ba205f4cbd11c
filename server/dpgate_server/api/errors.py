"""The one table from error reasons to gRPC status codes, with `google.rpc.ErrorInfo`.

Every error dpgate raises on purpose is a `DomainError` carrying one `ErrorReason` (the
catalogue in `dpgate_server.vocabulary.errors`, mirrored by `proto/dpgate/v1/errors.proto`).
`STATUS_BY_REASON` gives each reason its one status code; the reason travels as the
ErrorInfo `reason` string (the proto value's name without `ERROR_REASON_`), the error's
message as the status message, its metadata as ErrorInfo metadata.

Servicers never choose a status code: they let domain errors propagate, and the
`audited` decorator maps them here and writes the audit event (`audit_outcome`). Anything
that is not a `DomainError`, and any reason whose status is INTERNAL, is a bug: logged
with a request id and answered INTERNAL with that id, no detail (a crashed worker's
message, which never carries the exception, is kept).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, NoReturn, Protocol, TypeVar, cast

import grpc
from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from dpgate_server.api.call_context import CallContext, current_call
from dpgate_server.ledger import errors as ledger_errors
from dpgate_server.ledger.model import Outcome, RequestInfo
from dpgate_server.spend import describe, plain, units_to_decimal
from dpgate_server.vocabulary.errors import DomainError, ErrorReason

ERROR_DOMAIN = "dpgate.v1"
_log = logging.getLogger(__name__)

_R = ErrorReason
_C = grpc.StatusCode
STATUS_BY_REASON: Final[Mapping[ErrorReason, grpc.StatusCode]] = MappingProxyType(
    {
        # the request itself
        _R.MALFORMED_REQUEST: _C.INVALID_ARGUMENT,
        _R.REQUEST_STREAM_ENDED: _C.INVALID_ARGUMENT,
        _R.MESSAGE_TOO_LARGE: _C.RESOURCE_EXHAUSTED,  # what gRPC itself answers for it
        _R.MISSING_FIELD: _C.INVALID_ARGUMENT,
        _R.FIELD_TOO_LONG: _C.INVALID_ARGUMENT,
        _R.BAD_VALUE: _C.INVALID_ARGUMENT,
        _R.BAD_FORMAT: _C.INVALID_ARGUMENT,
        _R.BAD_PAGE_TOKEN: _C.INVALID_ARGUMENT,
        _R.BAD_IDEMPOTENCY_KEY: _C.INVALID_ARGUMENT,
        _R.IDEMPOTENCY_KEY_REUSED: _C.INVALID_ARGUMENT,
        _R.BAD_ROLE: _C.INVALID_ARGUMENT,
        _R.BAD_TIME: _C.INVALID_ARGUMENT,
        _R.ACCOUNTING_MISMATCH: _C.INVALID_ARGUMENT,
        _R.BAD_AMOUNT: _C.INVALID_ARGUMENT,
        _R.BAD_TOKEN_REQUEST: _C.INVALID_ARGUMENT,
        _R.REASON_REQUIRED: _C.INVALID_ARGUMENT,
        _R.BAD_SIGNED_HEAD: _C.INVALID_ARGUMENT,
        # queries
        _R.UNKNOWN_COLUMN: _C.INVALID_ARGUMENT,
        _R.PRIVATE_COLUMN: _C.INVALID_ARGUMENT,
        _R.NOT_GROUPABLE: _C.INVALID_ARGUMENT,
        _R.NOT_FILTERABLE: _C.INVALID_ARGUMENT,
        _R.DUPLICATE_COLUMN: _C.INVALID_ARGUMENT,
        _R.BAD_OPERATOR: _C.INVALID_ARGUMENT,
        _R.TOO_MANY_VALUES: _C.INVALID_ARGUMENT,
        _R.TOO_MANY_FILTERS: _C.INVALID_ARGUMENT,
        _R.TOO_MANY_CELLS: _C.INVALID_ARGUMENT,
        _R.BAD_AGGREGATE: _C.INVALID_ARGUMENT,
        _R.NOT_SUMMABLE: _C.INVALID_ARGUMENT,
        _R.BAD_SPEND: _C.INVALID_ARGUMENT,
        _R.WRONG_ACCOUNTING: _C.INVALID_ARGUMENT,
        _R.BAD_EPSILON: _C.INVALID_ARGUMENT,
        _R.BAD_RHO: _C.INVALID_ARGUMENT,
        _R.BAD_ACCURACY: _C.INVALID_ARGUMENT,
        _R.UNREACHABLE_ACCURACY: _C.INVALID_ARGUMENT,
        _R.BAD_CONFIDENCE: _C.INVALID_ARGUMENT,
        _R.BAD_CONTRIBUTIONS: _C.INVALID_ARGUMENT,
        # budget
        _R.BUDGET_EXHAUSTED: _C.RESOURCE_EXHAUSTED,
        _R.BELOW_SPENT: _C.FAILED_PRECONDITION,
        _R.CAP_BELOW_ALLOCATED: _C.FAILED_PRECONDITION,
        # who may call
        _R.BAD_TOKEN: _C.UNAUTHENTICATED,
        _R.ROLE_FORBIDDEN: _C.PERMISSION_DENIED,
        _R.SELF_GRANT_FORBIDDEN: _C.PERMISSION_DENIED,
        _R.REQUESTER_DISABLED: _C.PERMISSION_DENIED,
        _R.PRACTICE_FORBIDDEN: _C.PERMISSION_DENIED,
        # what does not exist, or exists already
        _R.DATASET_NOT_FOUND: _C.NOT_FOUND,
        _R.TABLE_NOT_FOUND: _C.NOT_FOUND,
        _R.REQUESTER_NOT_FOUND: _C.NOT_FOUND,
        _R.ALLOCATION_NOT_FOUND: _C.NOT_FOUND,
        _R.RELEASE_NOT_FOUND: _C.NOT_FOUND,
        _R.TOKEN_NOT_FOUND: _C.NOT_FOUND,
        _R.ALREADY_EXISTS: _C.ALREADY_EXISTS,
        # data governance
        _R.MISSING_HEADER: _C.INVALID_ARGUMENT,
        _R.UNEXPECTED_HEADER: _C.INVALID_ARGUMENT,
        _R.EXTRACT_TRUNCATED: _C.INVALID_ARGUMENT,
        _R.EXTRACT_TOO_LARGE: _C.INVALID_ARGUMENT,
        _R.EXTRACT_REJECTED: _C.INVALID_ARGUMENT,
        _R.OPT_OUT_LIST_REJECTED: _C.INVALID_ARGUMENT,
        _R.UNKNOWN_PRACTICE: _C.INVALID_ARGUMENT,
        _R.INSTRUCTION_REFERENCE_REQUIRED: _C.INVALID_ARGUMENT,
        _R.CONSENT_WITHDRAWN: _C.FAILED_PRECONDITION,
        _R.CONSENT_CHANGED: _C.FAILED_PRECONDITION,
        _R.KEY_MISMATCH: _C.FAILED_PRECONDITION,
        _R.PUBLISH_IN_PROGRESS: _C.FAILED_PRECONDITION,
        _R.STORAGE_FULL: _C.FAILED_PRECONDITION,
        _R.PUBLISH_CANCELLED: _C.CANCELLED,
        # the server's state: retry
        _R.OVERLOADED: _C.UNAVAILABLE,
        _R.RATE_LIMITED: _C.UNAVAILABLE,
        _R.LEDGER_UNAVAILABLE: _C.UNAVAILABLE,
        _R.SHUTTING_DOWN: _C.UNAVAILABLE,
        # failures
        _R.QUERY_TIMEOUT: _C.DEADLINE_EXCEEDED,
        _R.WORKER_FAILED: _C.INTERNAL,
        _R.INTERNAL: _C.INTERNAL,
        _R.NOT_IMPLEMENTED: _C.UNIMPLEMENTED,
    }
)
"""The status code of every reason (a test checks that none is missing)."""

AUDITED_ELSEWHERE: Final = frozenset({_R.LEDGER_UNAVAILABLE})
"""Reasons the API never audits: with the ledger unavailable, so is the audit chain (the
operator's log has it instead). A refusal the ledger decided (a budget refusal, say) is
not skipped by reason but by `DomainError.audited`: the ledger wrote its event."""

_OUTCOME_BY_STATUS: Final[Mapping[grpc.StatusCode, Outcome]] = MappingProxyType(
    {
        _C.RESOURCE_EXHAUSTED: Outcome.REFUSED,
        _C.UNAUTHENTICATED: Outcome.DENIED,
        _C.PERMISSION_DENIED: Outcome.DENIED,
        _C.UNAVAILABLE: Outcome.FAILED,
        _C.DEADLINE_EXCEEDED: Outcome.FAILED,
        _C.CANCELLED: Outcome.FAILED,  # the caller stopped the request; nothing happened
        _C.INTERNAL: Outcome.FAILED,
    }
)
"""The audit outcome of a refusal with this status; any other status is INVALID."""


def status_of(reason: ErrorReason) -> grpc.StatusCode:
    """The gRPC status code every refusal for `reason` carries."""
    return STATUS_BY_REASON[reason]


def audit_outcome(reason: ErrorReason) -> Outcome | None:
    """How the API audits a refusal for `reason`; None when it is audited elsewhere."""
    if reason in AUDITED_ELSEWHERE:
        return None
    return _OUTCOME_BY_STATUS.get(status_of(reason), Outcome.INVALID)


class BadRequestError(DomainError):
    """A request the API layer itself refuses (malformed before any domain call)."""

    def __init__(self, reason: ErrorReason, message: str, field: str = "") -> None:
        super().__init__(message, {"field": field} if field else None)
        self.reason = reason
        self.field = field


def require(value: str, field: str) -> str:
    """`value`, refusing an empty or blank one as MISSING_FIELD (the one rule for it)."""
    if not value.strip():
        raise BadRequestError(ErrorReason.MISSING_FIELD, f"{field} is required", field)
    return value


class NotYetAvailableError(DomainError):
    """An RPC in the contract whose implementation has not landed yet."""

    reason = ErrorReason.NOT_IMPLEMENTED

    def __init__(self, rpc: str, missing: str) -> None:
        super().__init__(f"{rpc} is not implemented yet: it needs {missing}")
        self.rpc = rpc
        self.missing = missing


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """What the client receives for an error; its status code follows from the reason."""

    reason: ErrorReason
    message: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def code(self) -> grpc.StatusCode:
        return status_of(self.reason)

    @property
    def outcome(self) -> Outcome | None:
        """The audit outcome to record; None when the domain already wrote the event."""
        return audit_outcome(self.reason)


def answer_for(exc: BaseException, request_id: str) -> ErrorAnswer:
    """The reason, message and metadata `exc` is answered with (the module table)."""
    if not isinstance(exc, DomainError):
        return _internal(exc, request_id)
    if isinstance(exc, ledger_errors.BudgetExhausted):
        return _budget_answer(exc)
    if isinstance(exc, ledger_errors.LedgerUnavailable):
        return ledger_unavailable_answer(exc)
    if status_of(exc.reason) is not grpc.StatusCode.INTERNAL:
        return ErrorAnswer(exc.reason, exc.message, exc.metadata)
    if exc.reason is ErrorReason.WORKER_FAILED:  # its message never carries the exception
        return ErrorAnswer(
            exc.reason,
            f"{exc.message}; nothing was charged. Quote request id {request_id} to the operator",
            {"request_id": request_id},
        )
    return _internal(exc, request_id)


def ledger_unavailable_answer(exc: ledger_errors.LedgerUnavailable) -> ErrorAnswer:
    """UNAVAILABLE/LEDGER_UNAVAILABLE: the ledger's database is down; nothing was charged.

    Not audited (`AUDITED_ELSEWHERE`): the audit chain lives in that database. The caller
    sees no database detail; the operator's log gets it (without password).
    """
    _log.warning("ledger unavailable: %s", exc)
    return ErrorAnswer(exc.reason, exc.message, exc.metadata)


def _internal(exc: BaseException, request_id: str) -> ErrorAnswer:
    _log.error("unexpected error (request id %s)", request_id, exc_info=exc)
    return ErrorAnswer(
        ErrorReason.INTERNAL,
        f"internal error; nothing was charged. Quote request id {request_id} to the operator",
        {"request_id": request_id},
    )


def _budget_answer(exc: ledger_errors.BudgetExhausted) -> ErrorAnswer:
    requested = units_to_decimal(exc.requested_units)
    remaining = units_to_decimal(exc.remaining_units)
    accounting = exc.accounting or ""
    return ErrorAnswer(
        ErrorReason.BUDGET_EXHAUSTED,
        f"the query costs {describe(exc.requested_units, accounting)} but only "
        f"{describe(exc.remaining_units, accounting)} remains of your allocation or the "
        "dataset's cap; nothing was charged. Spend less, or ask an administrator to top up",
        {
            "requested": plain(requested),
            "remaining": plain(remaining),
            "requested_nano_units": str(exc.requested_units),
            "remaining_nano_units": str(exc.remaining_units),
        },
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
    info = error_details_pb2.ErrorInfo(
        reason=answer.reason.value, domain=ERROR_DOMAIN, metadata=metadata
    )
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

    def record_event(self, request: RequestInfo, outcome: Outcome, *, detail: str = "") -> Any: ...


_Method = TypeVar("_Method", bound=Callable[..., Any])


def audited(*, record_success: bool) -> Callable[[_Method], _Method]:
    """Decorate a servicer method: map errors to statuses and write the audit event.

    Each request gets exactly one event. `record_success` is True for RPCs whose domain
    call writes no event of its own (reads); False where the ledger records success itself
    (a charge, a free repeat, an admin change). A failure is recorded here unless the
    ledger already did (`DomainError.audited`: it decided the refusal and wrote its event
    in the same transaction).
    The servicer instance must have a `_ledger` attribute.
    """

    def decorate(method: _Method) -> _Method:
        def succeed(self: Any) -> None:
            if record_success:
                self._ledger.record_event(current_call().request_info(), Outcome.ANSWERED)

        def fail(
            self: Any, context: grpc.ServicerContext, exc: Exception, request: Any
        ) -> NoReturn:
            abort(context, audit_failure(self._ledger, current_call(), exc, request))

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


def audit_failure(
    ledger: AuditSink, call: CallContext, exc: Exception, request: Any
) -> ErrorAnswer:
    """Write the audit event of a failed request (unless the ledger already did, or the
    reason is audited elsewhere) and return the answer it gets.

    `audited` calls it for every servicer; a streaming servicer whose caller has gone (so
    nothing can be answered) calls it itself, so its request still gets its one event.
    """
    answer = answer_for(exc, call.request_id)
    already = isinstance(exc, DomainError) and exc.audited
    if answer.outcome is not None and not already:
        try:
            ledger.record_event(
                call.request_info(_request_text(request)),
                answer.outcome,
                detail=answer.reason.value,
            )
        except Exception:  # the refusal must still reach the caller
            _log.exception("could not audit request %s", call.request_id)
    return answer


MAX_AUDITED_REQUEST_CHARS = 4096


def _request_text(request: Any) -> str:
    """What a refused request asked for, for the audit log (bounded; streams are not read)."""
    if not isinstance(request, Message):
        return ""
    text = json_format.MessageToJson(request, indent=None, sort_keys=True)
    return text[:MAX_AUDITED_REQUEST_CHARS]
