"""Canonical JSON is stated once, and the digests that depend on it keep their bytes.

The golden digests below were computed before the three copies became one: an audit
chain written by an earlier server must still verify, and a release key must still find
the releases already paid for.
"""

from __future__ import annotations

import datetime as dt

from dpgate_server.canonical import canonical_digest, canonical_json, sha256_hex
from dpgate_server.ledger.chain import event_hash
from dpgate_server.ledger.model import AuditEvent, Outcome
from dpgate_server.queries import model as m
from dpgate_server.vocabulary.accounting import Accounting


def test_keys_are_sorted_and_whitespace_dropped_at_every_depth() -> None:
    value = {"b": [{"z": 1, "y": 2}], "a": None}
    assert canonical_json(value) == '{"a":null,"b":[{"y":2,"z":1}]}'
    assert canonical_json(value) == canonical_json(dict(reversed(list(value.items()))))


def test_non_ascii_is_kept_or_escaped_as_asked() -> None:
    assert canonical_json(["é"]) == '["é"]'
    assert canonical_json(["é"], ascii_only=True) == '["\\u00e9"]'


def test_digest_is_the_sha256_of_the_utf8_text() -> None:
    assert sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert canonical_digest({"k": "é"}) == sha256_hex('{"k":"é"}')


def test_an_audit_event_hashes_as_before() -> None:
    event = AuditEvent(
        seq=7,
        at=dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC),
        requester_id="analyst-é",
        token_id="t1",
        role="analyst",
        rpc="RunQuery",
        query_text='{"q":"Café \u2013 naïve"}',
        dataset_id="gp_appointments",
        cost_units=1_500_000_000,
        outcome=Outcome.ANSWERED,
        release_id="r1",
        request_id="req-1",
        detail="charged epsilon 1.5 \u2014 \u201cquoted\u201d",
        prev_hash="0" * 64,
        event_hash="",
    )
    assert event_hash(event) == "5c53dee76ee6eac3d5fe3650a14f1a19e62004c75e009e8ac2d1462650ae4c48"


def test_a_release_key_is_as_before() -> None:
    query = m.CanonicalQuery(
        dataset_id="gp_appointments",
        dataset_version="v000003",
        aggregate=m.AggregateFunction.COUNT,
        column=None,
        filters=(m.CanonicalFilter("mode", m.FilterOp.IN, ("Café", "Face-to-Face")),),
        group_by=("practice_code",),
        accounting=Accounting.PURE_DP,
        spend_units=250_000_000,
        max_contributions=24,
    )
    assert query.to_json().isascii()
    assert query.key() == "e806aee34e34086616c34ab7bc4aad32f3c3cc8a141ae439d6213c4726a0b40b"
