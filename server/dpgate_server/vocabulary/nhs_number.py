"""The NHS number's Modulus 11 check: the one statement of the rule, for every caller.

An NHS number is ten digits; the last is a check digit computed from the first nine:
each is weighted 10, 9, ..., 2, and the check digit is 11 minus the weighted sum modulo
11, where 11 becomes 0 and 10 means no number with those nine digits is ever issued.

`expected_check_digit` states that arithmetic once, with operators only, so the same
function serves a single number (ints), the synthetic generator's whole test range
(numpy arrays) and ingest's validation of every row of an extract (Polars expressions).
It returns 10 where no check digit exists: no digit equals 10, so comparing its result
with the tenth digit is the whole test.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

import numpy as np
import numpy.typing as npt
import polars as pl

WEIGHTS: tuple[int, ...] = (10, 9, 8, 7, 6, 5, 4, 3, 2)
"""Weights of the first nine digits."""
NO_CHECK_DIGIT = 10
"""What `expected_check_digit` returns for nine digits no issued number starts with."""


@overload
def expected_check_digit(first_nine: Sequence[int]) -> int: ...
@overload
def expected_check_digit(first_nine: Sequence[npt.NDArray[np.int64]]) -> npt.NDArray[np.int64]: ...
@overload
def expected_check_digit(first_nine: Sequence[pl.Expr]) -> pl.Expr: ...
def expected_check_digit(first_nine: Sequence[Any]) -> Any:
    """The check digit the first nine digits call for (0-9), or NO_CHECK_DIGIT.

    >>> expected_check_digit([9, 4, 3, 4, 7, 6, 5, 9, 1])
    9
    """
    if len(first_nine) != len(WEIGHTS):
        raise ValueError(f"an NHS number's check needs 9 digits, got {len(first_nine)}")
    total = sum(digit * weight for digit, weight in zip(first_nine, WEIGHTS, strict=True))
    return (11 - total % 11) % 11


def is_valid_nhs_number(number: str) -> bool:
    """True if `number` is 10 digits whose last is the Modulus 11 check of the first nine.

    >>> is_valid_nhs_number("9434765919"), is_valid_nhs_number("9434765918")
    (True, False)
    """
    if len(number) != 10 or not number.isascii() or not number.isdigit():
        return False
    digits = [int(c) for c in number]
    return expected_check_digit(digits[:9]) == digits[9]
