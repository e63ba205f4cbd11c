"""One Modulus 11 rule, three kinds of input: ints, numpy arrays and Polars expressions."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from dpgate_server.vocabulary.nhs_number import (
    NO_CHECK_DIGIT,
    expected_check_digit,
    is_valid_nhs_number,
)


def _textbook(first_nine: str) -> int | None:
    """The rule as NHS Digital states it, step by step."""
    total = sum(int(d) * w for d, w in zip(first_nine, range(10, 1, -1), strict=True))
    remainder = total % 11
    check = 11 - remainder
    if check == 11:
        return 0
    if check == 10:
        return None
    return check


PREFIXES = [f"{n:09d}" for n in np.random.default_rng(11).integers(0, 10**9, 2_000)] + [
    "943476591",  # the worked example (check digit 9)
    "000000000",  # remainder 0: check 11 becomes 0
    "999000001",
]


def test_the_three_forms_agree_with_the_textbook_rule() -> None:
    textbook = [_textbook(p) for p in PREFIXES]
    expected = [NO_CHECK_DIGIT if c is None else c for c in textbook]
    assert {None, 0} <= set(textbook)  # both special cases are exercised
    as_ints = [expected_check_digit([int(c) for c in p]) for p in PREFIXES]
    digits = np.array([[int(c) for c in p] for p in PREFIXES], dtype=np.int64)
    as_array = expected_check_digit([digits[:, i] for i in range(9)])
    frame = pl.DataFrame({"n": PREFIXES})
    expr = expected_check_digit([pl.col("n").str.slice(i, 1).cast(pl.Int64) for i in range(9)])
    as_polars = frame.select(expr).to_series().to_list()
    assert as_ints == expected
    assert as_array.tolist() == expected
    assert as_polars == expected


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("9434765919", True),
        ("9434765918", False),
        ("0000000000", True),
        ("943476591", False),
        ("94347659190", False),
        ("943476591a", False),
        ("943476591\N{SUPERSCRIPT NINE}", False),  # a Unicode digit, not an ASCII one
        ("", False),
    ],
)
def test_is_valid_nhs_number(number: str, *, valid: bool) -> None:
    assert is_valid_nhs_number(number) is valid


def test_nine_digits_are_required() -> None:
    with pytest.raises(ValueError, match="9 digits"):
        expected_check_digit([1, 2, 3])
