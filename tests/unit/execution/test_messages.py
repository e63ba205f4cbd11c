"""Domain errors cross the process boundary as themselves; nothing else does."""

from __future__ import annotations

import pickle

import pytest

from dpgate_server.execution.messages import Refused, rebuild_error, refusal_of
from dpgate_server.queries.errors import (
    CostMismatchError,
    EngineError,
    InvalidQuery,
    ReleaseFormatError,
)
from dpgate_server.store.store import ManifestError
from dpgate_server.vocabulary.errors import DatasetNotFoundError, ErrorReason


def _round_trip(exc: Exception) -> Exception:
    refused = refusal_of(exc)
    assert refused is not None
    return rebuild_error(pickle.loads(pickle.dumps(refused)))


def test_invalid_query_is_rebuilt_with_reason_field_and_message() -> None:
    original = InvalidQuery(ErrorReason.NOT_GROUPABLE, "group_by[0]", "group by a public key")
    rebuilt = _round_trip(original)
    assert type(rebuilt) is InvalidQuery
    assert (rebuilt.reason, rebuilt.field, rebuilt.message) == (
        ErrorReason.NOT_GROUPABLE,
        "group_by[0]",
        "group by a public key",
    )
    assert str(rebuilt) == str(original)


def test_cost_mismatch_is_rebuilt_with_both_figures() -> None:
    original = CostMismatchError(1000, 1001, "count by practice")
    rebuilt = _round_trip(original)
    assert type(rebuilt) is CostMismatchError
    assert (rebuilt.dpgate_units, rebuilt.opendp_units) == (1000, 1001)
    assert str(rebuilt) == str(original)


@pytest.mark.parametrize(
    "original",
    [EngineError("OpenDP refused"), DatasetNotFoundError("gp_appointments/v000009")],
)
def test_message_only_domain_errors_are_rebuilt_as_themselves(original: Exception) -> None:
    rebuilt = _round_trip(original)
    assert type(rebuilt) is type(original)
    assert rebuilt.args == original.args


@pytest.mark.parametrize(
    "other",
    [
        RuntimeError("boom"),
        ValueError("bad"),
        ReleaseFormatError("not a domain error a worker may raise"),
        ManifestError("digest mismatch"),
    ],
)
def test_other_errors_are_not_refusals(other: Exception) -> None:
    assert refusal_of(other) is None


def test_subclass_of_a_domain_error_is_not_passed_as_its_parent() -> None:
    class Custom(EngineError):
        pass

    assert refusal_of(Custom("x")) is None


def test_unknown_type_name_cannot_be_rebuilt() -> None:
    with pytest.raises(KeyError):
        rebuild_error(Refused("SystemExit", (), {}))
