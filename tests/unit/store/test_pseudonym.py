"""Keyed pseudonyms and the reserved test range of NHS numbers."""

from __future__ import annotations

import hashlib
import hmac
import stat
from pathlib import Path

import numpy as np
import pytest

from dpgate_server.store.pseudonym import (
    KEY_BYTES,
    KeyFileError,
    ascii_patient_keys,
    check_digit,
    load_or_create_key,
    patient_key,
    patient_keys,
    reserved_test_numbers,
    synthetic_identity,
)
from dpgate_server.vocabulary.nhs_number import is_valid_nhs_number


def test_key_is_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "key"
    key = load_or_create_key(path)
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_is_reused_once_created(tmp_path: Path) -> None:
    path = tmp_path / "key"
    assert load_or_create_key(path) == load_or_create_key(path)


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    load_or_create_key(path)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_key(path)


def test_key_of_wrong_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"short")
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="bytes"):
        load_or_create_key(path)


def test_patient_key_is_first_eight_bytes_of_hmac_sha256_signed_big_endian() -> None:
    key = bytes(range(32))
    digest = hmac.new(key, b"9990000018", hashlib.sha256).digest()
    assert patient_key(key, "9990000018") == int.from_bytes(digest[:8], "big", signed=True)


def test_batch_keys_equal_single_keys() -> None:
    key = b"\x07" * 32
    identities = [f"{n:010d}" for n in reserved_test_numbers()[:500]] + ["9990000018/3"]
    expected = [patient_key(key, i) for i in identities]
    assert patient_keys(key, identities).tolist() == expected
    assert ascii_patient_keys(key, (i.encode() for i in identities)).tolist() == expected


def test_keys_differ_under_another_key() -> None:
    assert patient_key(b"a" * 32, "9990000018") != patient_key(b"b" * 32, "9990000018")


def test_published_check_digit_example_is_valid() -> None:
    assert is_valid_nhs_number("9434765919")
    assert not is_valid_nhs_number("9434765918")
    assert check_digit(943476591) == 9


def test_reserved_numbers_are_valid_and_in_range() -> None:
    numbers = reserved_test_numbers()
    assert numbers.min() >= 999_000_0000
    assert numbers.max() <= 999_999_9999
    assert np.unique(numbers).size == numbers.size
    sample = numbers[:: numbers.size // 997]
    assert all(is_valid_nhs_number(f"{n:010d}") for n in sample.tolist())


def test_reserved_range_holds_every_valid_number() -> None:
    # About one prefix in 11 has no valid check digit: ~909,091 numbers in all.
    numbers = reserved_test_numbers()
    assert 905_000 < numbers.size < 913_000
    prefixes = range(999_000_000, 999_010_000)
    brute = [p * 10 + d for p in prefixes if (d := check_digit(p)) is not None]
    assert numbers[: len(brute)].tolist() == brute


def test_first_cohort_identity_is_the_bare_nhs_number() -> None:
    assert synthetic_identity(9990000018, 0) == "9990000018"
    assert synthetic_identity(9990000018, 2) == "9990000018/2"
