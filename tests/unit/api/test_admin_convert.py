"""AdminService and AuditService conversions: refusals name their field; chunks are bounded."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from dpgate_proto.v1 import admin_pb2, types_pb2
from dpgate_server.api.admin_convert import (
    canonical_request,
    chunks,
    role_from_proto,
    spend_units,
    time_from_proto,
)
from dpgate_server.api.admin_servicer import new_requester_id
from dpgate_server.api.errors import BadRequestError
from dpgate_server.vocabulary.accounting import Accounting


def test_rfc3339_time_with_offset_is_read_as_utc() -> None:
    moment = time_from_proto("2026-01-31T01:30:00+01:00", "expires_at")
    assert moment == dt.datetime(2026, 1, 31, 0, 30, tzinfo=dt.UTC)
    assert moment is not None
    assert moment.tzinfo is dt.UTC


def test_empty_time_is_none() -> None:
    assert time_from_proto("", "expires_at") is None


@pytest.mark.parametrize("text", ["tomorrow", "2026-01-31T00:00:00", "2026-13-01T00:00:00Z"])
def test_bad_time_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(BadRequestError) as refused:
        time_from_proto(text, "expires_at")
    assert (refused.value.reason, refused.value.field) == ("BAD_TIME", "expires_at")


def test_unset_role_is_refused() -> None:
    with pytest.raises(BadRequestError) as refused:
        role_from_proto(admin_pb2.ROLE_UNSPECIFIED)
    assert refused.value.field == "role"


def test_amount_in_the_datasets_unit_passes_through() -> None:
    spend = types_pb2.Spend(accounting=types_pb2.ACCOUNTING_ZCDP, nano_units=7)
    assert spend_units(spend, Accounting.ZCDP, "cap", "d") == 7


def test_amount_in_another_unit_is_refused() -> None:
    spend = types_pb2.Spend(accounting=types_pb2.ACCOUNTING_ZCDP, nano_units=7)
    with pytest.raises(BadRequestError) as refused:
        spend_units(spend, Accounting.PURE_DP, "cap", "d")
    assert (refused.value.reason, refused.value.field) == ("ACCOUNTING_MISMATCH", "cap")


def test_canonical_request_is_sorted_json_of_every_field() -> None:
    request = admin_pb2.IssueTokenRequest(
        requester_id="r", role=admin_pb2.ROLE_PROVIDER, practice_codes=["B2", "A1"]
    )
    text = canonical_request(request)
    assert json.loads(text) == {
        "practice_codes": ["B2", "A1"],
        "requester_id": "r",
        "role": "ROLE_PROVIDER",
    }
    assert text == canonical_request(
        admin_pb2.IssueTokenRequest.FromString(request.SerializeToString())
    )


def test_chunks_are_bounded_and_rejoin() -> None:
    data = bytes(range(256)) * 1000
    pieces = list(chunks(data, 64 * 1024))
    assert all(len(p) <= 64 * 1024 for p in pieces)
    assert b"".join(pieces) == data
    assert len(pieces) == 4


def test_empty_data_is_one_empty_chunk() -> None:
    assert list(chunks(b"", 10)) == [b""]


def test_requester_ids_are_slugs_with_a_random_suffix() -> None:
    first, second = new_requester_id("Ünïcode Team!"), new_requester_id("Ünïcode Team!")
    assert first != second
    assert first.startswith("unicode-team-")
    assert new_requester_id("???").startswith("requester-")
