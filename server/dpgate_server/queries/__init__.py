"""The DP query engine: validated COUNT and SUM queries compiled to OpenDP.

Public surface (what the API layer calls)::

    prepared = prepare(version, query, limits)     # checks + price + key; reads no rows
    release = execute(version, prepared)           # cost cross-check, data, noise
    release = run(version, query, limits)          # both
    summary = preview(version_or_metadata, query)  # accuracy and cost, free
    other = with_confidence_level(release, 0.9)    # free post-processing
    payload = release.to_bytes(); Release.from_bytes(payload)

Errors: InvalidQuery(reason, field, message) for the requester's mistakes (reasons from
`dpgate_server.vocabulary.errors.ErrorReason`); CostMismatchError and EngineError for
plans dpgate will not charge for.
This package never imports grpc.
"""

from dpgate_server.queries.accuracy import coverage, half_width, with_confidence_level
from dpgate_server.queries.engine import PreparedQuery, Preview, execute, prepare, preview, run
from dpgate_server.queries.errors import (
    CostMismatchError,
    EngineError,
    InvalidQuery,
    QueryError,
    ReleaseFormatError,
)
from dpgate_server.queries.limits import QueryLimits
from dpgate_server.queries.model import (
    Aggregate,
    AggregateFunction,
    BoundingMethod,
    CanonicalFilter,
    CanonicalQuery,
    Cell,
    Filter,
    FilterOp,
    Mechanism,
    Query,
    Release,
    Spend,
    SpendMeasure,
)

__all__ = [
    "Aggregate",
    "AggregateFunction",
    "BoundingMethod",
    "CanonicalFilter",
    "CanonicalQuery",
    "Cell",
    "CostMismatchError",
    "EngineError",
    "Filter",
    "FilterOp",
    "InvalidQuery",
    "Mechanism",
    "PreparedQuery",
    "Preview",
    "Query",
    "QueryError",
    "QueryLimits",
    "Release",
    "ReleaseFormatError",
    "Spend",
    "SpendMeasure",
    "coverage",
    "execute",
    "half_width",
    "prepare",
    "preview",
    "run",
    "with_confidence_level",
]
