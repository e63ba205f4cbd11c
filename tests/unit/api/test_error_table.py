"""The one catalogue of refusals: every reason has one status, every domain error one reason.

The reasons are the proto's `dpgate.v1.ErrorReason` values without their prefix; the API
table maps each to a gRPC status code; the rich status a refused call ends with carries
that code and the reason string. These tests hold the three together.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

import dpgate_server
from dpgate_proto.v1 import errors_pb2
from dpgate_server.api.errors import (
    STATUS_BY_REASON,
    BadRequestError,
    ErrorAnswer,
    abort,
    answer_for,
    audit_outcome,
    require,
)
from dpgate_server.execution import errors as execution_errors
from dpgate_server.governance.errors import GovernanceError
from dpgate_server.ledger import errors as ledger_errors
from dpgate_server.ledger.model import Outcome
from dpgate_server.queries.errors import InvalidQuery, QueryError
from dpgate_server.vocabulary.errors import DatasetNotFoundError, DomainError, ErrorReason

PREFIX = "ERROR_REASON_"


def test_the_server_catalogue_is_the_proto_enum() -> None:
    values = errors_pb2.DESCRIPTOR.enum_types_by_name["ErrorReason"].values
    proto = [v.name for v in values if v.name != f"{PREFIX}UNSPECIFIED"]
    assert all(name.startswith(PREFIX) for name in proto)
    assert [name.removeprefix(PREFIX) for name in proto] == [r.name for r in ErrorReason]


def test_every_reason_is_its_own_name_on_the_wire() -> None:
    assert all(reason.value == reason.name for reason in ErrorReason)


def test_every_reason_has_a_status_code() -> None:
    assert set(STATUS_BY_REASON) == set(ErrorReason)
    assert grpc.StatusCode.OK not in STATUS_BY_REASON.values()


class _Refused(DomainError):
    """A domain error of any reason, to drive the table entry by entry."""

    def __init__(self, reason: ErrorReason) -> None:
        super().__init__(f"refused for {reason}", {"fact": "1"})
        self.reason = reason


class _Aborted(Exception):
    pass


class _Context:
    """Records the status a servicer aborts with (what gRPC sends the caller)."""

    status: Any = None

    def abort_with_status(self, status: Any) -> None:
        self.status = status
        raise _Aborted


def _sent(answer: ErrorAnswer) -> tuple[int, str, error_details_pb2.ErrorInfo]:
    context = _Context()
    with pytest.raises(_Aborted):
        abort(context, answer)  # type: ignore[arg-type]
    [(_, trailer)] = [m for m in context.status.trailing_metadata if m[0].endswith("-bin")]
    status = status_pb2.Status.FromString(trailer)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return status.code, status.message, info


@pytest.mark.parametrize("reason", list(ErrorReason), ids=lambda r: r.value)
def test_each_entry_reaches_the_wire_as_its_code_and_reason(reason: ErrorReason) -> None:
    code = STATUS_BY_REASON[reason]
    answer = answer_for(_Refused(reason), "req-1")
    if code is grpc.StatusCode.INTERNAL and reason is not ErrorReason.WORKER_FAILED:
        # A bug: no detail leaves the server, only the request id to quote.
        assert (answer.reason, answer.metadata) == (ErrorReason.INTERNAL, {"request_id": "req-1"})
        assert "refused for" not in answer.message
        return
    sent_code, message, info = _sent(answer)
    assert sent_code == code.value[0]
    assert (info.reason, info.domain) == (reason.name, "dpgate.v1")
    assert message.startswith(f"refused for {reason}")
    assert info.metadata["fact"] == "1" or reason is ErrorReason.WORKER_FAILED


@pytest.mark.parametrize(
    ("reason", "outcome"),
    [
        (ErrorReason.BAD_VALUE, Outcome.INVALID),
        (ErrorReason.DATASET_NOT_FOUND, Outcome.INVALID),
        (ErrorReason.ROLE_FORBIDDEN, Outcome.DENIED),
        (ErrorReason.PRACTICE_FORBIDDEN, Outcome.DENIED),
        (ErrorReason.OVERLOADED, Outcome.FAILED),
        (ErrorReason.QUERY_TIMEOUT, Outcome.FAILED),
        (ErrorReason.INTERNAL, Outcome.FAILED),
        (ErrorReason.BUDGET_EXHAUSTED, Outcome.REFUSED),
        (ErrorReason.PUBLISH_CANCELLED, Outcome.FAILED),  # the caller stopped it
        (ErrorReason.LEDGER_UNAVAILABLE, None),  # so is the audit chain
    ],
)
def test_audit_outcome_follows_the_status(reason: ErrorReason, outcome: Outcome | None) -> None:
    assert audit_outcome(reason) is outcome


def test_anything_that_is_not_a_domain_error_is_internal_without_detail() -> None:
    answer = answer_for(KeyError("secret detail"), "req-2")
    assert answer.code is grpc.StatusCode.INTERNAL
    assert "secret" not in answer.message
    assert "req-2" in answer.message


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ledger_errors.BudgetExhausted(5, 1), ErrorReason.BUDGET_EXHAUSTED),
        (ledger_errors.IdempotencyConflict("k"), ErrorReason.IDEMPOTENCY_KEY_REUSED),
        (ledger_errors.SelfGrantForbidden("own"), ErrorReason.SELF_GRANT_FORBIDDEN),
        (ledger_errors.RequesterNotFound("r"), ErrorReason.REQUESTER_NOT_FOUND),
        (ledger_errors.LedgerBusy("sqlite: locked"), ErrorReason.OVERLOADED),
        (ledger_errors.LedgerUnavailable("db down"), ErrorReason.LEDGER_UNAVAILABLE),
        (execution_errors.PoolOverloaded(2.0), ErrorReason.OVERLOADED),
        (execution_errors.PoolClosed(), ErrorReason.SHUTTING_DOWN),
        (execution_errors.QueryDeadlineExceeded(3.0), ErrorReason.QUERY_TIMEOUT),
        (InvalidQuery(ErrorReason.BAD_EPSILON, "epsilon", "m"), ErrorReason.BAD_EPSILON),
        (GovernanceError(ErrorReason.KEY_MISMATCH, "m"), ErrorReason.KEY_MISMATCH),
        (BadRequestError(ErrorReason.BAD_FORMAT, "m", "format"), ErrorReason.BAD_FORMAT),
        (DatasetNotFoundError("nope"), ErrorReason.DATASET_NOT_FOUND),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else "",
)
def test_domain_errors_are_answered_with_their_reason(
    error: DomainError, reason: ErrorReason
) -> None:
    answer = answer_for(error, "req-3")
    assert answer.reason is reason
    assert answer.code is STATUS_BY_REASON[reason]


def test_retry_hints_and_hidden_details_survive_the_table() -> None:
    busy = answer_for(ledger_errors.LedgerBusy("database is locked at /srv/ledger.db"), "r")
    assert busy.metadata == {"retry_after_seconds": "1.000"}
    assert "/srv" not in busy.message
    down = answer_for(ledger_errors.LedgerUnavailable("password=hunter2 host gone"), "r")
    assert "hunter2" not in down.message
    assert down.metadata == {"retry_after_seconds": "2.000"}
    overloaded = answer_for(execution_errors.PoolOverloaded(3.0), "r")
    assert overloaded.metadata == {"retry_after_seconds": "3.000"}


def test_a_missing_dataset_is_one_error_wherever_it_is_noticed() -> None:
    # The store, the ledger and the query validator all raise the one shared error.
    from dpgate_server.ledger import admin, ledger  # noqa: PLC0415
    from dpgate_server.queries import validation  # noqa: PLC0415
    from dpgate_server.store import catalog, store  # noqa: PLC0415

    for module in (admin, ledger, validation, catalog, store):
        assert module.DatasetNotFoundError is DatasetNotFoundError
    assert not hasattr(ledger_errors, "DatasetNotFound")
    error = DatasetNotFoundError("gp", "v000009")
    assert (error.reason, error.metadata) == (ErrorReason.DATASET_NOT_FOUND, {"dataset_id": "gp"})
    assert isinstance(error, LookupError)


def test_a_blank_required_field_is_missing() -> None:
    assert require("gp", "dataset_id") == "gp"
    for blank in ("", "   "):
        with pytest.raises(BadRequestError) as caught:
            require(blank, "dataset_id")
        assert (caught.value.reason, caught.value.field) == (
            ErrorReason.MISSING_FIELD,
            "dataset_id",
        )


PER_INSTANCE = {InvalidQuery, GovernanceError, BadRequestError}
"""Classes covering several reasons, each instance naming its own."""
ABSTRACT = {
    DomainError,
    ledger_errors.LedgerError,
    ledger_errors.NotFound,
    execution_errors.ExecutionError,
    QueryError,
}


def _all_subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _all_subclasses(sub)
    return found


def test_every_domain_error_class_names_its_reason() -> None:
    for module in pkgutil.walk_packages(dpgate_server.__path__, "dpgate_server."):
        importlib.import_module(module.name)
    classes = {
        cls
        for cls in _all_subclasses(DomainError)
        if cls.__module__.startswith("dpgate_server.") and cls not in ABSTRACT | PER_INSTANCE
    }
    assert len(classes) > 20
    # Where the class's reason comes from: itself or a concrete ancestor, never the base's
    # INTERNAL default.
    source = {c: next(k for k in c.__mro__ if "reason" in vars(k)) for c in classes}
    without = sorted(c.__qualname__ for c, k in source.items() if k is DomainError)
    assert without == [], "give each a reason (or list it as per-instance/abstract here)"
    assert all(isinstance(vars(k)["reason"], ErrorReason) for k in source.values())
