"""Keyed pseudonyms: NHS numbers become `patient_key` values that never leave the server.

`patient_key` is the first 8 bytes of HMAC-SHA-256 of the NHS number (its 10 ASCII digits)
under the server's pseudonymisation key, read as a signed big-endian int64. Without the key
nobody can test a guessed NHS number against a key, and the same patient gets the same key
at every practice, so contribution bounding is per patient across a dataset.

Synthetic NHS numbers come only from the range reserved for testing (999 000 0000 to
999 999 9999), so no generated number can be a real patient's. That range holds only
909,091 numbers with a valid Modulus 11 check digit, fewer than the demo's 1.5 M patients
(England has 64 M). The generator therefore hands out the test numbers in *cohorts*: cohort 0
uses each valid number once and is pseudonymised exactly as ingest pseudonymises an NHS
number; a later cohort reuses the numbers and pseudonymises "<number>/<cohort>", so distinct
synthetic patients never share a key. See `synthetic_identity`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import stat
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dpgate_server.durable import create_exclusively
from dpgate_server.vocabulary.nhs_number import NO_CHECK_DIGIT, expected_check_digit

KEY_BYTES = 32
"""Length of a pseudonymisation key (256 bits)."""

TEST_RANGE_FIRST = 999_000_0000
TEST_RANGE_LAST = 999_999_9999


class KeyFileError(RuntimeError):
    """The key file exists but is unusable (wrong length or readable by others)."""


def load_or_create_key(path: Path) -> bytes:
    """Read the server's pseudonymisation key, creating it (mode 0600) on first use.

    The key is created with `O_EXCL`, so two processes starting together cannot both
    write one: the loser reads the winner's key. A key readable by group or others is
    refused rather than used, since anyone holding it can re-identify patient keys.
    """
    create_exclusively(path, secrets.token_bytes(KEY_BYTES))
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path} is accessible by group or others; chmod 600 it")
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"{path} holds {len(key)} bytes, expected {KEY_BYTES}")
    return key


def key_id(key: bytes) -> str:
    """A short public fingerprint of a key: tells versions made under different keys apart."""
    return hmac.digest(key, b"dpgate key id", "sha256")[:6].hex()


def patient_key(key: bytes, nhs_number: str) -> int:
    """The pseudonym of one NHS number (10 digits, no spaces), as ingest computes it."""
    return _key_of(key, nhs_number.encode("ascii"))


def patient_keys(key: bytes, identities: Iterable[str]) -> npt.NDArray[np.int64]:
    """`patient_key` of many identities at once (~1.5 µs each)."""
    return ascii_patient_keys(key, (identity.encode("ascii") for identity in identities))


def ascii_patient_keys(key: bytes, identities: Iterable[bytes]) -> npt.NDArray[np.int64]:
    """`patient_key` of many identities given as their ASCII bytes (as Polars hands out a
    Binary column: no str object and no encode per identity).

    HMAC by hand (RFC 2104) with the padded-key states computed once: the same bytes as
    `hmac.digest`, without redoing the key schedule for every patient.
    """
    block = hashlib.sha256().block_size
    padded = (hashlib.sha256(key).digest() if len(key) > block else key).ljust(block, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))
    inner_copy, outer_copy = inner.copy, outer.copy
    keys: list[bytes] = []
    append = keys.append
    for identity in identities:  # one loop, no call per identity but hashlib's own
        step = inner_copy()
        step.update(identity)
        final = outer_copy()
        final.update(step.digest())
        append(final.digest()[:8])
    return np.frombuffer(b"".join(keys), dtype=">i8").astype(np.int64)


def _key_of(key: bytes, message: bytes) -> int:
    return int.from_bytes(hmac.digest(key, message, hashlib.sha256)[:8], "big", signed=True)


def check_digit(first_nine: int) -> int | None:
    """Modulus 11 check digit of an NHS number's first nine digits; None if none exists."""
    check = expected_check_digit([int(c) for c in f"{first_nine:09d}"])
    return None if check == NO_CHECK_DIGIT else check


@cache
def reserved_test_numbers() -> npt.NDArray[np.int64]:
    """Every valid NHS number in the reserved test range, ascending (909,091 of them)."""
    first_nine = np.arange(TEST_RANGE_FIRST // 10, TEST_RANGE_LAST // 10 + 1, dtype=np.int64)
    digits = (first_nine[:, None] // 10 ** np.arange(8, -1, -1, dtype=np.int64)) % 10
    check = expected_check_digit([digits[:, i] for i in range(9)])
    valid = check != NO_CHECK_DIGIT
    numbers: npt.NDArray[np.int64] = first_nine[valid] * 10 + check[valid]
    numbers.flags.writeable = False
    return numbers


def synthetic_identity(nhs_number: int, cohort: int) -> str:
    """What the generator pseudonymises for a synthetic patient.

    Cohort 0 is the bare NHS number, exactly what ingest pseudonymises. Later cohorts
    reuse the test numbers (there are too few) and add "/<cohort>" so each synthetic patient
    still has a key of their own.
    """
    return f"{nhs_number:010d}" if cohort == 0 else f"{nhs_number:010d}/{cohort}"
