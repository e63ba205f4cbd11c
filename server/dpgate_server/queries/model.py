"""Queries and releases as immutable values, with the canonical form that keys a release.

A `Query` is what a requester asked, unchecked: the API layer builds it from a message and
`validation` decides whether it may run. A `CanonicalQuery` is the checked, normalised
question (filters sorted, `in` lists sorted and de-duplicated, `=` written as a one-value
`in`, group-by sorted, target accuracy resolved to a spend, the contribution bound
resolved) on one dataset version; the sha256 of its canonical JSON is the release key
(DESIGN.md "Dataset versions and releases"). The confidence level is deliberately not in
the key: an interval at another level is post-processing of the same noisy values.

A `Release` is what the ledger stores as an opaque payload (`to_bytes` / `from_bytes`):
a one-line JSON header and the cells as Arrow IPC (`cell_table`); payloads stored before
the columnar format (JSON with a list per cell) still read.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

import polars as pl

from dpgate_server.canonical import canonical_json, sha256_hex
from dpgate_server.queries import cell_table
from dpgate_server.queries.errors import ReleaseFormatError
from dpgate_server.store.metadata import KeyValue
from dpgate_server.vocabulary.accounting import Accounting
from dpgate_shared.confidence import DEFAULT_CONFIDENCE_LEVEL

CANONICAL_FORMAT = 1
"""Bumped if the canonical JSON ever changes shape (old keys then never collide)."""


class AggregateFunction(StrEnum):
    """The two aggregates dpgate releases."""

    COUNT = "COUNT"
    SUM = "SUM"


class FilterOp(StrEnum):
    """Filter operators; a query's filters are a conjunction."""

    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    IN = "in"


class SpendMeasure(StrEnum):
    """How a spend is stated: epsilon (pure DP) or rho (zCDP)."""

    EPSILON = "epsilon"
    RHO = "rho"


class Mechanism(StrEnum):
    """The noise a release carries (integer-valued, so intervals are exact)."""

    DISCRETE_LAPLACE = "discrete_laplace"
    DISCRETE_GAUSSIAN = "discrete_gaussian"


class BoundingMethod(StrEnum):
    """How each patient's contribution was bounded for a release."""

    PUBLISH_TIME = "publish_time"
    """The version was cut to k rows per patient and verified at publish; row-level unit."""
    PER_QUERY = "per_query"
    """The query kept k random rows per patient after its filters; patient-level unit."""


@dataclass(frozen=True, slots=True)
class Aggregate:
    """COUNT of rows, or SUM of a bounded integer column (clamped to its public bounds)."""

    function: str
    column: str | None = None

    @staticmethod
    def count() -> Aggregate:
        return Aggregate(AggregateFunction.COUNT)

    @staticmethod
    def sum(column: str) -> Aggregate:
        return Aggregate(AggregateFunction.SUM, column)


@dataclass(frozen=True, slots=True)
class Filter:
    """`column op value` (or `column in values`), exactly as the requester wrote it.

    `op` is one of FilterOp's strings; `values` holds one value, or the `in` list. Dates
    may be `datetime.date` or ISO strings. Nothing is checked here: see validation.
    """

    column: str
    op: str
    values: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class Spend:
    """A privacy spend as requested: epsilon or rho, as a float or an exact Decimal."""

    measure: str
    value: float | Decimal

    @staticmethod
    def epsilon(value: float | Decimal) -> Spend:
        return Spend(SpendMeasure.EPSILON, value)

    @staticmethod
    def rho(value: float | Decimal) -> Spend:
        return Spend(SpendMeasure.RHO, value)


@dataclass(frozen=True, slots=True)
class Query:
    """A requester's question, unchecked.

    Attributes:
        dataset_id: the dataset asked about.
        aggregate: COUNT, or SUM of a column.
        filters: a conjunction of filters.
        group_by: public columns to group on; every public key appears in the answer.
        spend: epsilon or rho to spend. Exactly one of `spend` and `target_half_width`.
        target_half_width: instead of a spend, the widest acceptable interval half-width
            at `confidence_level`; the smallest spend reaching it is used.
        confidence_level: the interval's coverage (default 95%). Not part of the key.
        max_contributions: a bound smaller than the dataset's, to pay less per query at
            the price of dropping more of heavy patients' rows. None: the dataset's.
    """

    dataset_id: str
    aggregate: Aggregate
    filters: tuple[Filter, ...] = ()
    group_by: tuple[str, ...] = ()
    spend: Spend | None = None
    target_half_width: float | None = None
    confidence_level: float = DEFAULT_CONFIDENCE_LEVEL
    max_contributions: int | None = None


@dataclass(frozen=True, slots=True)
class CanonicalFilter:
    """A checked filter: `op` is never `=` (written as a one-value `in`), values sorted."""

    column: str
    op: FilterOp
    values: tuple[KeyValue, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "op": self.op.value,
            "values": [value_to_json(v) for v in self.values],
        }

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> CanonicalFilter:
        values = tuple(value_from_json(v) for v in raw["values"])
        return CanonicalFilter(raw["column"], FilterOp(raw["op"]), values)


@dataclass(frozen=True, slots=True)
class CanonicalQuery:
    """The normalised question on one dataset version; its hash is the release key.

    Attributes:
        dataset_id: dataset.
        dataset_version: version the release reads (a new version is a new question).
        aggregate: COUNT or SUM.
        column: the SUM column (None for COUNT).
        filters: sorted, de-duplicated.
        group_by: sorted.
        accounting: pure DP or zCDP (the dataset's).
        spend_units: the requested spend in nano-epsilon or nano-rho (a target accuracy
            already resolved to the smallest spend reaching it).
        max_contributions: the bound the release is charged for.
    """

    dataset_id: str
    dataset_version: str
    aggregate: AggregateFunction
    column: str | None
    filters: tuple[CanonicalFilter, ...]
    group_by: tuple[str, ...]
    accounting: Accounting
    spend_units: int
    max_contributions: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CANONICAL_FORMAT,
            "dataset_id": self.dataset_id,
            "dataset_version": self.dataset_version,
            "aggregate": self.aggregate.value,
            "column": self.column,
            "filters": [f.to_dict() for f in self.filters],
            "group_by": list(self.group_by),
            "accounting": self.accounting.value,
            "spend_units": self.spend_units,
            "max_contributions": self.max_contributions,
        }

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace, ASCII only."""
        return canonical_json(self.to_dict(), ascii_only=True)

    def key(self) -> str:
        """The release key: hex sha256 of the canonical JSON."""
        return sha256_hex(self.to_json())

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> CanonicalQuery:
        if raw.get("format") != CANONICAL_FORMAT:
            raise ReleaseFormatError(f"unknown canonical query format {raw.get('format')!r}")
        return CanonicalQuery(
            dataset_id=str(raw["dataset_id"]),
            dataset_version=str(raw["dataset_version"]),
            aggregate=AggregateFunction(raw["aggregate"]),
            column=None if raw["column"] is None else str(raw["column"]),
            filters=tuple(CanonicalFilter.from_dict(f) for f in raw["filters"]),
            group_by=tuple(str(c) for c in raw["group_by"]),
            accounting=Accounting(raw["accounting"]),
            spend_units=int(raw["spend_units"]),
            max_contributions=int(raw["max_contributions"]),
        )


@dataclass(frozen=True, slots=True)
class Cell:
    """One released group: its key values (in `Release.group_by` order) and noisy value.

    `value` is the unbiased noisy aggregate (never rounded or clamped); the interval
    `[ci_low, ci_high]` covers the bounded table's true value with probability at least
    the release's confidence level.
    """

    key: tuple[KeyValue | None, ...]
    value: int
    ci_low: int
    ci_high: int


@dataclass(frozen=True, slots=True)
class Release:
    """A computed answer: what the ledger stores and the API returns.

    Attributes:
        query: the canonical question (dataset version, spend, bound included).
        key: `query.key()`, the release key.
        table: the cells as Arrow IPC bytes (`cell_table`): the group-by columns, `value`,
            `ci_low`, `ci_high`, one row per public key (one row, no key columns, when not
            grouped), sorted. Kept encoded: it is stored and sent as these bytes.
        cell_count: the number of cells (rows of `table`).
        mechanism: the noise distribution.
        noise_scale: its scale parameter as OpenDP applied it (Laplace b or Gaussian sigma).
        cost_units: what dpgate charges, in nano units of the query's accounting, rounded up.
        bounding: how each patient's rows were bounded.
        confidence_level: the level of the cells' intervals.
        half_width: the intervals' half-width (the same for every cell).
    """

    query: CanonicalQuery
    key: str
    table: bytes
    cell_count: int
    mechanism: Mechanism
    noise_scale: float
    cost_units: int
    bounding: BoundingMethod
    confidence_level: float
    half_width: int

    @property
    def dataset_id(self) -> str:
        return self.query.dataset_id

    @property
    def dataset_version(self) -> str:
        return self.query.dataset_version

    @property
    def accounting(self) -> Accounting:
        return self.query.accounting

    @property
    def group_by(self) -> tuple[str, ...]:
        return self.query.group_by

    def frame(self) -> pl.DataFrame:
        """The cells as a Polars frame (decodes `table`)."""
        return cell_table.decode(self.table)

    @property
    def cells(self) -> tuple[Cell, ...]:
        """The cells one by one: for tests and small answers, never on the serving path."""
        width = len(self.group_by)
        return tuple(
            Cell(
                key=tuple(row[:width]),
                value=row[width],
                ci_low=int(row[width + 1]),
                ci_high=int(row[width + 2]),
            )
            for row in self.frame().iter_rows()
        )

    def to_bytes(self) -> bytes:
        """The stored form: a magic line, the header as canonical JSON, then the cells.

        Floats keep their exact value (Python writes the shortest repr). The header is
        one line (canonical JSON is compact ASCII), so it parses without the cells.
        """
        header = {
            "query": self.query.to_dict(),
            "key": self.key,
            "cell_count": self.cell_count,
            "mechanism": self.mechanism.value,
            "noise_scale": self.noise_scale,
            "cost_units": self.cost_units,
            "bounding": self.bounding.value,
            "confidence_level": self.confidence_level,
            "half_width": self.half_width,
        }
        line = canonical_json(header, ascii_only=True).encode("ascii")
        return RELEASE_MAGIC + line + b"\n" + self.table

    @staticmethod
    def from_bytes(payload: bytes) -> Release:
        """Parse a stored release, columnar or in the JSON form stored before it.

        The cells of a columnar payload are not decoded here (they travel as bytes). Refuses
        a payload whose key is not its query's hash.
        """
        try:
            if payload.startswith(RELEASE_MAGIC):
                release = _columnar_release(payload)
            else:
                release = _json_release(payload)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ReleaseFormatError(f"release payload does not parse: {exc}") from exc
        if release.key != release.query.key():
            raise ReleaseFormatError("release key does not match its canonical query")
        return release


RELEASE_MAGIC = b"dpgate-release/2\n"
"""First line of a columnar release payload; a payload without it is the older JSON form."""


def _columnar_release(payload: bytes) -> Release:
    end = payload.index(b"\n", len(RELEASE_MAGIC))
    raw = json.loads(payload[len(RELEASE_MAGIC) : end].decode("ascii"))
    return Release(
        query=CanonicalQuery.from_dict(raw["query"]),
        key=str(raw["key"]),
        table=payload[end + 1 :],
        cell_count=int(raw["cell_count"]),
        mechanism=Mechanism(raw["mechanism"]),
        noise_scale=float(raw["noise_scale"]),
        cost_units=int(raw["cost_units"]),
        bounding=BoundingMethod(raw["bounding"]),
        confidence_level=float(raw["confidence_level"]),
        half_width=int(raw["half_width"]),
    )


def _json_release(payload: bytes) -> Release:
    """A release stored before the columnar format: JSON with one list per cell."""
    raw = json.loads(payload.decode("utf-8"))
    query = CanonicalQuery.from_dict(raw["query"])
    keys, values, lows, highs = [], [], [], []
    for key, value, low, high in raw["cells"]:
        keys.append([None if k is None else value_from_json(k) for k in key])
        values.append(int(value))
        lows.append(float(int(low)))
        highs.append(float(int(high)))
    table = cell_table.from_rows(query.group_by, keys, values, lows, highs)
    return Release(
        query=query,
        key=str(raw["key"]),
        table=cell_table.encode(table),
        cell_count=len(values),
        mechanism=Mechanism(raw["mechanism"]),
        noise_scale=float(raw["noise_scale"]),
        cost_units=int(raw["cost_units"]),
        bounding=BoundingMethod(raw["bounding"]),
        confidence_level=float(raw["confidence_level"]),
        half_width=int(raw["half_width"]),
    )


def value_to_json(value: KeyValue | None) -> Any:
    """JSON form of a key or filter value; dates are tagged so they never equal a string."""
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    return value


def value_from_json(raw: Any) -> KeyValue:
    """Inverse of `value_to_json` for non-null values."""
    if isinstance(raw, dict):
        return dt.date.fromisoformat(raw["date"])
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise ValueError(f"unsupported value {raw!r}")
    return raw
