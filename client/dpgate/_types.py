"""Public value types of the client: frozen dataclasses, never generated protobuf types."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import polars as pl

from dpgate.accuracy import Expected, relative_half_widths, relative_to, relative_to_value
from dpgate.publication import DEFAULT_ROUND_TO, nhs_conventions
from dpgate_shared.privacy_loss import DEFAULT_DELTA, epsilon_equivalent

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
class PeriodCap:
    """The caps on one period column of a version (None: not declared)."""

    period: str
    """"week" or "month"."""
    rows: int | None
    """k: the most rows one patient has in any one period."""
    periods: int | None
    """g: the most periods (distinct weeks or months) one patient has rows in."""
    practice_periods: int | None
    """The most distinct (practice_code, period) groups one patient has rows in."""


@dataclass(frozen=True, slots=True)
class ContributionBounds:
    """How a version bounds each patient's rows: public policy, enforced at publish.

    Costs are computed from these. With verified per-period caps, a query grouped by a
    period is charged for how far one patient can move it under them: under zCDP a count by
    week moves by at most min(K, k * sqrt(min(g, K))) in L2 instead of K; under pure DP by
    min(K, g * k) in L1, which is less only when g * k < K. A cap on rows per period also
    holds for finer groupings (practice x week); a cap on groups holds for coarser ones.
    """

    max_contributions: int
    """K: the most rows one patient has across the version."""
    verified: bool
    """True when publishing cut every patient to these bounds and verified the files: queries
    charge for them. False: each query truncates to `max_contributions` instead."""
    method: str
    """How the rows were chosen, e.g. "keyed-hash-k-per-patient"."""
    period_caps: tuple[PeriodCap, ...] = ()
    """Per-period caps enforced with K, week before month (empty: K alone)."""


_BOUND_WORDS = {
    "total_rows": "{limit}-row bound",
    "rows_per_period": "{limit}-rows-a-{period} bound",
    "periods": "{limit}-{period}s bound",
    "practice_periods": "{limit}-(practice, {period})-groups bound",
}


@dataclass(frozen=True, slots=True)
class DroppedPatients:
    """How many patients (a DP count, with its interval) lost rows to one bound."""

    bound: str
    """"total_rows" (K), "rows_per_period" (k), "periods" (g) or "practice_periods"."""
    period: str | None
    """"week" or "month" for a per-period bound; None for the total."""
    limit: int
    """The bound's value (24 rows; 3 rows a week; 10 weeks; ...)."""
    value: int
    """The noisy count: unbiased, so it may be negative or above the truth."""
    ci_low: float
    ci_high: float

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2.0

    @property
    def bound_words(self) -> str:
        """The bound as people say it: "24-row bound", "3-rows-a-week bound"."""
        words = _BOUND_WORDS.get(self.bound, "{limit} " + self.bound + " bound")
        return words.format(limit=self.limit, period=self.period or "")

    def __str__(self) -> str:
        return (
            f"{self.value:,} ± {self.half_width:,.0f} patients had rows dropped by the "
            f"{self.bound_words}"
        )


@dataclass(frozen=True, slots=True, repr=False)
class BiasFigure:
    """How far a version's contribution bounds bias its answers: for each bound, a DP count
    of the patients who lost rows to it.

    Answers on a version estimate its *bounded* table: totals are low by the rows these
    patients lost, and no interval covers that bias. The figure was released once when the
    version was published, charged to the dataset's cap then (`spend`), and is stored with
    the version: reading it is free, and it is the same for everyone.

    Example:
        >>> figure = BiasFigure(version="v000002", released=True, counts=(
        ...     DroppedPatients("total_rows", None, 24, 1234, 1174.0, 1294.0),))
        >>> str(figure)
        'v000002: 1,234 ± 60 patients had rows dropped by the 24-row bound'
    """

    version: str
    """The dataset version the figure belongs to."""
    released: bool
    """Whether that version's publish released one."""
    note: str = ""
    """Why not, when it did not."""
    counts: tuple[DroppedPatients, ...] = ()
    """One per bound the version enforces, the total K first."""
    mechanism: str = ""
    """"discrete_laplace" or "discrete_gaussian"."""
    noise_scale: float = 0.0
    confidence_level: float = 0.0
    spend: Decimal = Decimal(0)
    """What the dataset's cap paid for it at publish (epsilon or rho, per `accounting`)."""
    accounting: str = "unspecified"

    def lines(self) -> list[str]:
        """The figure in words, a line per bound ("1,234 ± 60 patients had rows dropped
        by the 24-row bound"), or why there is none."""
        if not self.released:
            return [f"no bias figure for {self.version}: {self.note}"]
        return [str(count) for count in self.counts]

    def __str__(self) -> str:
        if not self.released:
            return f"{self.version}: no bias figure ({self.note})"
        return f"{self.version}: " + "; ".join(str(count) for count in self.counts)

    def __repr__(self) -> str:
        return f"BiasFigure({self})"


@dataclass(frozen=True, slots=True)
class PublishedVersion(DatasetInfo):
    """A version just published (what `AdminClient.publish_dataset_version` returns): the
    dataset and its new current version, with the bias figure the publish released."""

    bias_figure: BiasFigure | None = None
    """Released (charged to the dataset's cap), or withheld and why (the cap could not
    pay; turned off); None when the server releases none."""


@dataclass(frozen=True, slots=True)
class DatasetDescription:
    """Everything public about a dataset."""

    dataset: DatasetInfo
    columns: tuple[ColumnInfo, ...]
    public_tables: dict[str, tuple[str, ...]]
    """Public table names and their columns."""
    bounds: ContributionBounds | None = None
    """The current version's contribution bounds (None: the version records none, and each
    query truncates to `dataset.max_contributions`)."""
    bias_figure: BiasFigure | None = None
    """How many patients lost rows to each bound in the current version (None: the
    version records no figure)."""

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
    accounting: str = "unspecified"
    """"pure_dp" (the amounts are epsilon) or "zcdp" (rho)."""
    derived_from: str = ""
    """For a derived answer, the release whose cells were added up to answer this query,
    free and with no new noise; `frame` then ends with `cells` (how many released cells
    each row adds up; its interval is exact for that sum). Empty for a release computed
    from data. Given only when asked (`client.query(..., derive="if_as_accurate")`)."""
    bias_figure: BiasFigure | None = None
    """How many patients lost rows to each bound of `dataset_version` (read beside the
    answer: its totals are low by their dropped rows); None when the version records no
    figure."""

    def epsilon_equivalent(self, delta: float = DEFAULT_DELTA) -> float | None:
        """Under zCDP, the epsilon the release's cost amounts to at `delta` (see
        `dpgate_shared.privacy_loss`); None under pure DP, where the cost is an epsilon."""
        return epsilon_equivalent(self.release_cost, self.accounting, delta)

    def relative_accuracy(self, expected: Expected | None = None) -> pl.DataFrame:
        """`frame` with `half_width` and `rel_half_width` (half-width / value; null where
        the interval reaches zero), and with `expected`, `rel_half_width_expected`.

        Args:
            expected: what you expect each value to be: one number, or a frame of the
                group-by columns and an `expected` column. See `dpgate.accuracy`.
        """
        return relative_half_widths(self.frame, expected=expected, keys=self.group_by)

    def nhs_conventions(
        self, *, round_to: int | None = DEFAULT_ROUND_TO, suppress_below: float | None = None
    ) -> pl.DataFrame:
        """The cells as NHS publications show them: rounded to the nearest `round_to`
        (intervals outwards), cells whose noisy value is below `suppress_below` hidden and
        flagged `suppressed`. Post-processing of this answer: no privacy cost, and the
        stored release is unchanged. See `dpgate.publication`."""
        return nhs_conventions(
            self.frame, keys=self.group_by, round_to=round_to, suppress_below=suppress_below
        )

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
    expected: float | None = None
    """The value you said you expect a cell to be (`Client.preview(..., expected=...)`)."""
    derived: DerivedOption | None = None
    """The free option beside the fresh one (`spend`, `half_width`): the query answered by
    adding up cells of a release you may receive (`client.query(..., derive=...)`)."""

    @property
    def rel_half_width_expected(self) -> float | None:
        """The half-width as a fraction of `expected` (None without one, or if it is not
        positive): 0.05 means each cell would be +/- 5% of what you expect."""
        return relative_to_value(self.half_width, self.expected)

    def relative_to(self, expected: pl.DataFrame) -> pl.DataFrame:
        """Per cell, before spending: `expected` (your frame of key columns and an
        `expected` column) with `half_width` and `rel_half_width_expected` added."""
        return expected.with_columns(
            pl.lit(self.half_width, dtype=pl.Float64).alias("half_width"),
            relative_to(pl.col("expected"), self.half_width).alias("rel_half_width_expected"),
        )

    def epsilon_equivalent(self, delta: float = DEFAULT_DELTA) -> float | None:
        """Under zCDP, the epsilon `spend` amounts to at `delta`; None under pure DP."""
        return epsilon_equivalent(self.spend, self.accounting, delta)


@dataclass(frozen=True, slots=True)
class DerivedOption:
    """A free answer derived from a release already made on the current version."""

    derived_from: str
    """The release whose cells would be added up."""
    half_width: float
    """The widest interval half-width among the derived cells."""
    cells: int
    """Number of cells of the derived answer."""
    summed_cells: int
    """The most released cells added up into one derived cell."""


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
    derived_from: str = ""
    """For a derived answer you were given (free): the release whose cells it adds up."""
