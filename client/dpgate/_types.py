"""Public value types of the client: frozen dataclasses, never generated protobuf types."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import polars as pl

KeyValue = str | int | dt.date
"""A public value: a category label, an integer or a date."""


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """A dataset and its current version."""

    dataset_id: str
    title: str
    description: str
    version: str
    accounting: str
    """"pure_dp" (spend epsilon) or "zcdp" (spend rho)."""
    max_contributions: int
    period_start: dt.date
    period_end: dt.date


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """A column and what may be asked of it."""

    name: str
    kind: str
    """"string", "integer" or "date"."""
    public: bool
    description: str
    groupable: bool
    filterable: bool
    values: tuple[KeyValue, ...]
    """The public value set (empty when the column has none)."""
    bounds: tuple[int, int] | None
    """For integer columns, the public range a SUM clamps to."""
    summable: bool
    key_table: str


@dataclass(frozen=True, slots=True)
class DatasetDescription:
    """Everything public about a dataset."""

    dataset: DatasetInfo
    columns: tuple[ColumnInfo, ...]
    public_tables: dict[str, tuple[str, ...]]
    """Public table names and their columns."""

    def column(self, name: str) -> ColumnInfo:
        """The column called `name`; raises KeyError naming the columns there are."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"no column {name!r}; columns: {', '.join(c.name for c in self.columns)}")


@dataclass(frozen=True, slots=True)
class QueryResult:
    """A DP answer: one row per group with its noisy value and interval, and its bill.

    `frame` has the group-by columns, then `value` (the unbiased noisy value, never
    rounded or clamped), `ci_low` and `ci_high`. Add cells up from `frame` before any
    rounding; `display()` is for showing, not for arithmetic.
    """

    frame: pl.DataFrame
    release_id: str
    dataset_id: str
    dataset_version: str
    group_by: tuple[str, ...]
    mechanism: str
    noise_scale: float
    confidence_level: float
    charged: Decimal
    """Spend charged by this call (0 for a repeat). A call retried with the same
    idempotency key (its first answer lost) is told what the first attempt charged:
    charged once, reported on every answer to that key."""
    release_cost: Decimal
    """What the release cost when it was first computed."""
    remaining: Decimal
    """What remains of your budget on the dataset (for a retried call, as it was when the
    first attempt was answered)."""
    repeat: bool
    """True when this answer is an earlier release served again, free and identical."""
    canonical_query: str

    def display(self, *, clamp_at_zero: bool = True) -> pl.DataFrame:
        """Values rounded to whole numbers (and negative ones shown as 0), for reading only."""
        exprs = [pl.col(c).round(0).cast(pl.Int64) for c in ("value", "ci_low", "ci_high")]
        shown = self.frame.with_columns(exprs)
        if clamp_at_zero:
            shown = shown.with_columns(
                pl.col(c).clip(lower_bound=0) for c in ("value", "ci_low", "ci_high")
            )
        return shown


@dataclass(frozen=True, slots=True)
class EarlierRelease:
    """The identical question, answered for you on an older version of the dataset.

    Releases are per version: on the current version the question is a new one, charged
    again (`PreviewResult.spend`).
    """

    release_id: str
    dataset_version: str
    """The older version it was computed on."""
    cost: Decimal
    """What the release cost when it was made."""
    shared: bool
    """Another requester paid for it; it was shared with you free."""


@dataclass(frozen=True, slots=True)
class PreviewResult:
    """What a query would cost and how accurate it would be (free; reads no data)."""

    spend: Decimal
    accounting: str
    half_width: float
    confidence_level: float
    cells: int
    mechanism: str
    noise_scale: float
    notes: tuple[str, ...]
    earlier_release: EarlierRelease | None = None
    """Set when you received this question's answer on an older version of the dataset
    and running it now will be charged `spend` again."""
    warnings: tuple[str, ...] = ()
    """What to know before running it, in words (e.g. that it will be charged again)."""


@dataclass(frozen=True, slots=True)
class BudgetInfo:
    """Your budget on one dataset (epsilon or rho, exact)."""

    dataset_id: str
    accounting: str
    allocated: Decimal
    spent: Decimal
    remaining: Decimal
    expires_at: str


@dataclass(frozen=True, slots=True)
class ReleaseInfo:
    """One of your earlier releases (its cells are fetched by asking the same query again)."""

    release_id: str
    dataset_id: str
    dataset_version: str
    canonical_query: str
    cost: Decimal
    created_at: str
