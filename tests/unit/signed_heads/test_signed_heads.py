"""Signing, parsing and publishing heads; verifying a chain from a kept head."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest

from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import ChainHead, Outcome, RequestInfo
from dpgate_server.signed_heads import (
    HeadPublisher,
    SignedHead,
    SignedHeadFormatError,
    SigningKeyError,
    load_or_create_signing_key,
    sign_head,
)
from dpgate_server.signed_heads.keys import public_key_bytes

AT = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
HEAD = ChainHead(count=7, hash="ab" * 32)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "audit.pem"


def test_key_is_created_owner_only_and_reloaded(tmp_path: Path, key_file: Path) -> None:
    first = load_or_create_signing_key(key_file, tmp_path / "data")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = load_or_create_signing_key(key_file, tmp_path / "data")
    assert public_key_bytes(first) == public_key_bytes(again)


def test_key_inside_the_data_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match=r"inside storage\.data_dir"):
        load_or_create_signing_key(tmp_path / "data" / "k.pem", tmp_path / "data")


def test_signature_round_trips_through_json(tmp_path: Path, key_file: Path) -> None:
    key = load_or_create_signing_key(key_file, tmp_path / "data")
    signed = sign_head(key, HEAD, AT)
    parsed = SignedHead.from_json(signed.to_json())
    assert parsed == signed
    assert parsed.signature_matches(public_key_bytes(key).hex())
    assert parsed.head == HEAD


def test_changed_field_or_other_key_fails(tmp_path: Path, key_file: Path) -> None:
    key = load_or_create_signing_key(key_file, tmp_path / "data")
    other = load_or_create_signing_key(tmp_path / "other.pem", tmp_path / "data")
    raw = json.loads(sign_head(key, HEAD, AT).to_json())
    raw["event_count"] = 8
    assert not SignedHead.from_json(json.dumps(raw)).signature_matches(public_key_bytes(key).hex())
    signed = sign_head(key, HEAD, AT)
    assert not signed.signature_matches(public_key_bytes(other).hex())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ('{"format": "other"}', "not a signed head"),
        ("x" * 5000, "under 4096"),
    ],
)
def test_malformed_heads_are_refused(text: str, message: str) -> None:
    with pytest.raises(SignedHeadFormatError, match=message):
        SignedHead.from_json(text)


def test_bad_field_shapes_are_named(tmp_path: Path, key_file: Path) -> None:
    key = load_or_create_signing_key(key_file, tmp_path / "data")
    raw = json.loads(sign_head(key, HEAD, AT).to_json())
    for field, value, message in (
        ("event_count", -1, "event_count"),
        ("head_hash", "XYZ", "head_hash"),
        ("signature", "00", "signature"),
        ("signed_at", "2026-01-02T03:04:05", "time zone"),
    ):
        broken = {**raw, field: value}
        with pytest.raises(SignedHeadFormatError, match=message):
            SignedHead.from_json(json.dumps(broken))


def _append(ledger: Ledger, n: int) -> None:
    for i in range(n):
        ledger.record_event(RequestInfo(request_id=f"r{i}", rpc="Test"), Outcome.ANSWERED)


def test_publisher_signs_only_when_the_chain_grew(tmp_path: Path, key_file: Path) -> None:
    key = load_or_create_signing_key(key_file, tmp_path / "data")
    with Ledger.open_sqlite(tmp_path / "ledger.sqlite") as ledger:
        publisher = HeadPublisher(ledger.head, key, tmp_path / "heads", 3600, clock=lambda: AT)
        assert publisher.publish_now() is None  # an empty chain is not signed
        _append(ledger, 3)
        first = publisher.publish_now()
        assert first is not None
        assert first.event_count == 3
        assert publisher.publish_now() == first
        _append(ledger, 2)
        second = publisher.publish_now()
        assert second is not None
        assert second.event_count == 5
        assert [h.event_count for h in publisher.history()] == [5, 3]
        assert publisher.get(3) == first
        assert publisher.get(4) is None


def test_verify_from_a_kept_head(tmp_path: Path) -> None:
    with Ledger.open_sqlite(tmp_path / "ledger.sqlite") as ledger:
        _append(ledger, 5)
        kept = ChainHead(3, ledger.list_events(2, 1)[0].event_hash)
        assert ledger.verify_from(kept).ok
        assert ledger.verify_from(ChainHead(0, "0" * 64)).ok
        wrong = ledger.verify_from(ChainHead(3, "cd" * 32))
        assert not wrong.ok
        assert wrong.first_bad_seq == 3
        assert "rewritten" in (wrong.problem or "")
        beyond = ledger.verify_from(ChainHead(9, "cd" * 32))
        assert not beyond.ok
        assert "cut" in (beyond.problem or "")
