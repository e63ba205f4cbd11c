"""The query engine's exceptions, documented in one place.

`InvalidQuery` is the requester's mistake: it is raised before any data is read or any
budget is touched, carries a stable reason code (mapped by the API layer to
`INVALID_ARGUMENT`, or `NOT_FOUND` for `UNKNOWN_DATASET`), the offending field, and a
message that says what to change. The other errors are the server's: they refuse a query
that dpgate cannot charge honestly, and the API layer maps them to `INTERNAL`.

Reason codes (`Reason`):

=====================  ====================================================================
UNKNOWN_DATASET        the query names a dataset other than the one it is run against
UNKNOWN_COLUMN         a group-by, filter or SUM column the dataset does not have
PRIVATE_COLUMN         a group-by or filter on a private column (the privacy unit)
NOT_GROUPABLE          a group-by on a public column without a public key set
NOT_FILTERABLE         a filter on a column the metadata does not allow filtering on
DUPLICATE_COLUMN       the same column twice in the group-by
BAD_OPERATOR           an unknown operator, or an ordering operator on a category column
BAD_VALUE              a filter value of the wrong type, outside the public set or range,
                       or the wrong number of values for the operator
TOO_MANY_VALUES        more `in` values than the configured maximum
TOO_MANY_FILTERS       more filters than the configured maximum
TOO_MANY_CELLS         the group-by would release more cells than the configured maximum
BAD_AGGREGATE          an aggregate other than COUNT or SUM(column), or COUNT of a column
NOT_SUMMABLE           SUM of a column that is not a bounded integer the metadata allows
BAD_SPEND              neither or both of a spend and a target accuracy, or an unknown
                       spend measure
WRONG_ACCOUNTING       epsilon on a zCDP dataset, or rho on a pure-DP dataset
BAD_EPSILON            epsilon not a finite number, <= 0, below 1e-9 or above the maximum
BAD_RHO                rho not a finite number, <= 0, below 1e-9 or above the maximum
BAD_ACCURACY           a target half-width that is not a finite number > 0
UNREACHABLE_ACCURACY   no spend up to the per-query maximum reaches the target half-width
BAD_CONFIDENCE         a confidence level that is not a number strictly between 0 and 1
BAD_CONTRIBUTIONS      max_contributions not an integer from 1 to the dataset's maximum
=====================  ====================================================================
"""

from __future__ import annotations

from enum import StrEnum

from dpgate_shared.units import plain, units_to_decimal


class Reason(StrEnum):
    """Why a query was refused; stable strings, part of the public API."""

    UNKNOWN_DATASET = "UNKNOWN_DATASET"
    UNKNOWN_COLUMN = "UNKNOWN_COLUMN"
    PRIVATE_COLUMN = "PRIVATE_COLUMN"
    NOT_GROUPABLE = "NOT_GROUPABLE"
    NOT_FILTERABLE = "NOT_FILTERABLE"
    DUPLICATE_COLUMN = "DUPLICATE_COLUMN"
    BAD_OPERATOR = "BAD_OPERATOR"
    BAD_VALUE = "BAD_VALUE"
    TOO_MANY_VALUES = "TOO_MANY_VALUES"
    TOO_MANY_FILTERS = "TOO_MANY_FILTERS"
    TOO_MANY_CELLS = "TOO_MANY_CELLS"
    BAD_AGGREGATE = "BAD_AGGREGATE"
    NOT_SUMMABLE = "NOT_SUMMABLE"
    BAD_SPEND = "BAD_SPEND"
    WRONG_ACCOUNTING = "WRONG_ACCOUNTING"
    BAD_EPSILON = "BAD_EPSILON"
    BAD_RHO = "BAD_RHO"
    BAD_ACCURACY = "BAD_ACCURACY"
    UNREACHABLE_ACCURACY = "UNREACHABLE_ACCURACY"
    BAD_CONFIDENCE = "BAD_CONFIDENCE"
    BAD_CONTRIBUTIONS = "BAD_CONTRIBUTIONS"


class QueryError(Exception):
    """Base of every error the query engine raises on purpose."""


class InvalidQuery(QueryError):
    """A query refused before it touched data or budget.

    Attributes:
        reason: the machine-readable code (see the module docstring).
        field: where the problem is, e.g. "filters[1].values[0]" or "epsilon".
        message: one or two sentences saying what is wrong and what to change.
    """

    def __init__(self, reason: Reason, field: str, message: str) -> None:
        super().__init__(f"{reason.value} ({field}): {message}")
        self.reason = reason
        self.field = field
        self.message = message


class CostMismatchError(QueryError):
    """dpgate's own cost figure is below OpenDP's: the query is refused and logged.

    dpgate charges from the bound and the noise scale; OpenDP's `map(d_in)` derives the
    cost from the plan. If OpenDP says more, one of the two is wrong about this plan and
    no one may be charged less than the mechanism could cost.
    """

    def __init__(self, dpgate_units: int, opendp_units: int, detail: str) -> None:
        opendp = plain(units_to_decimal(opendp_units)) if opendp_units >= 0 else "not finite"
        super().__init__(
            f"refused: dpgate's charge {plain(units_to_decimal(dpgate_units))} is below "
            f"OpenDP's cost {opendp} ({detail})"
        )
        self.dpgate_units = dpgate_units
        self.opendp_units = opendp_units


class EngineError(QueryError):
    """OpenDP refused or failed a plan dpgate built from its own templates (a server bug)."""


class ReleaseFormatError(QueryError):
    """Stored release bytes do not parse, or their key does not match their query."""
