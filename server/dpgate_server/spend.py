"""Exact privacy spend: epsilon and rho as integers of 1e-9 (nano units).

The rules live in `dpgate_shared.units`, shared with the client so that both sides
convert, round and display amounts the same way; this module is the server's name for
them. Floats are never compared or added in the ledger: every spend is converted once,
rounding *up* (a requester is never charged less than the mechanism costs), into an
integer number of nano units, and composed by integer addition.
"""

from __future__ import annotations

from dpgate_shared.units import (
    UNITS_PER_WHOLE,
    describe,
    measure_of,
    parse_decimal_units,
    plain,
    to_units_ceil,
    to_units_floor,
    units_to_decimal,
    units_to_float,
)

__all__ = [
    "UNITS_PER_WHOLE",
    "describe",
    "measure_of",
    "parse_decimal_units",
    "plain",
    "to_units_ceil",
    "to_units_floor",
    "units_to_decimal",
    "units_to_float",
]
