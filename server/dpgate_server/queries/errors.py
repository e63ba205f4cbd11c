"""The query engine's exceptions, documented in one place.

`InvalidQuery` is the requester's mistake: it is raised before any data is read or any
budget is touched, and carries a stable reason from the catalogue
(`dpgate_server.vocabulary.errors.ErrorReason`; `proto/dpgate/v1/errors.proto` says what
each means, from UNKNOWN_COLUMN to BAD_CONTRIBUTIONS), the offending field, and a message
that says what to change. A query naming a dataset that is not there raises the shared
`DatasetNotFoundError`. The other errors are the server's: they refuse a query that
dpgate cannot charge honestly, and are answered INTERNAL.
"""

from __future__ import annotations

from dpgate_server.vocabulary.errors import DomainError, ErrorReason
from dpgate_shared.units import plain, units_to_decimal


class QueryError(DomainError):
    """Base of every error the query engine raises on purpose (INTERNAL unless overridden)."""


class InvalidQuery(QueryError):
    """A query refused before it touched data or budget.

    Attributes:
        reason: the machine-readable code (see the module docstring).
        field: where the problem is, e.g. "filters[1].values[0]" or "epsilon".
        message: one or two sentences saying what is wrong and what to change.
    """

    def __init__(self, reason: ErrorReason, field: str, message: str) -> None:
        super().__init__(message, {"field": field})
        self.reason = reason
        self.field = field

    def __str__(self) -> str:
        return f"{self.reason.value} ({self.field}): {self.message}"


class CostMismatchError(QueryError):
    """dpgate's own cost figure is below OpenDP's: the query is refused and logged.

    dpgate charges from the bound and the noise scale; OpenDP's `map(d_in)` derives the
    cost from the plan. If OpenDP says more, one of the two is wrong about this plan and
    no one may be charged less than the mechanism could cost.
    """

    reason = ErrorReason.INTERNAL

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

    reason = ErrorReason.INTERNAL


class ReleaseFormatError(QueryError):
    """Stored release bytes do not parse, or their key does not match their query."""

    reason = ErrorReason.INTERNAL
