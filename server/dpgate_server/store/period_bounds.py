"""Per-period contribution bounds: policy that caps a patient's rows week by week (or month
by month), beside the total bound K (issue 18 item 1).

A dataset's metadata may declare, for each period column ("week", "month"):

- `rows`: at most k rows per patient in any one period;
- `periods`: at most g periods (distinct weeks or months) per patient;
- `practice_periods`: at most c distinct (practice_code, period) groups per patient.

These are public policy, never observed maxima. Publishing enforces them with the total K in
one pass (store.period_bounding) and verifies the written files against them; the version's
manifest records them only then, and only a verified record reaches OpenDP (as
`dp.polars.Bound`s of the row-level unit), so a bound the files do not satisfy can never be
claimed. They help zCDP releases grouped by a period (the L2 change of a count by week is
min(K, k * sqrt(min(g, K))) instead of K); under pure DP the L1 change is min(K, g * k),
which helps only when g * k < K (docs/per-period-bounds.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PERIOD_COLUMNS: tuple[str, ...] = ("week", "month")
"""The columns a period bound may name."""
PRACTICE_COLUMN = "practice_code"
"""The column the group-count caps pair with a period."""


@dataclass(frozen=True, slots=True)
class PeriodCap:
    """The caps on one period column (each None when not declared)."""

    period: str
    rows: int | None = None
    """k: rows per patient in one period."""
    periods: int | None = None
    """g: periods per patient."""
    practice_periods: int | None = None
    """Distinct (practice_code, period) groups per patient."""

    def __post_init__(self) -> None:
        if self.period not in PERIOD_COLUMNS:
            raise ValueError(f"a period bound names one of {PERIOD_COLUMNS}, not {self.period!r}")
        for name in ("rows", "periods", "practice_periods"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ValueError(f"{self.period} bound {name} must be a positive integer")
        if self.rows is None and self.periods is None and self.practice_periods is None:
            raise ValueError(f"the {self.period} bound declares no cap")


@dataclass(frozen=True, slots=True)
class PeriodBounds:
    """Every declared period cap (empty: only the total bound K, as before item 1)."""

    caps: tuple[PeriodCap, ...] = ()

    def __post_init__(self) -> None:
        periods = [c.period for c in self.caps]
        if len(set(periods)) != len(periods):
            raise ValueError("each period may be bounded once")
        if periods != sorted(periods, key=PERIOD_COLUMNS.index):
            object.__setattr__(
                self, "caps", tuple(sorted(self.caps, key=lambda c: PERIOD_COLUMNS.index(c.period)))
            )

    def __bool__(self) -> bool:
        return bool(self.caps)

    def cap(self, period: str) -> PeriodCap | None:
        for cap in self.caps:
            if cap.period == period:
                return cap
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            cap.period: {
                name: value
                for name in ("rows", "periods", "practice_periods")
                if (value := getattr(cap, name)) is not None
            }
            for cap in self.caps
        }

    @staticmethod
    def from_dict(raw: Mapping[str, Any] | None) -> PeriodBounds:
        if not raw:
            return PeriodBounds()
        caps = []
        for period, fields in raw.items():
            unknown = set(fields) - {"rows", "periods", "practice_periods"}
            if unknown:
                raise ValueError(f"unknown {period} bound field(s): {', '.join(sorted(unknown))}")
            caps.append(
                PeriodCap(
                    period=str(period),
                    rows=_int_or_none(fields.get("rows")),
                    periods=_int_or_none(fields.get("periods")),
                    practice_periods=_int_or_none(fields.get("practice_periods")),
                )
            )
        return PeriodBounds(tuple(caps))


@dataclass(frozen=True, slots=True)
class GroupingBound:
    """One bound in OpenDP's terms (`dp.polars.Bound`): over the rows of a patient, at most
    `per_group` rows in any group of `by`, and at most `num_groups` groups of `by`."""

    by: tuple[str, ...]
    per_group: int | None = None
    num_groups: int | None = None


def grouping_bounds(max_contributions: int, bounds: PeriodBounds) -> tuple[GroupingBound, ...]:
    """The total bound K and every period cap as OpenDP bounds (K first: OpenDP refuses a
    per-period bound without it, "per_group contributions is unknown")."""
    out = [GroupingBound(by=(), per_group=max_contributions)]
    for cap in bounds.caps:
        if cap.rows is not None or cap.periods is not None:
            out.append(GroupingBound(by=(cap.period,), per_group=cap.rows, num_groups=cap.periods))
        if cap.practice_periods is not None:
            out.append(
                GroupingBound(by=(PRACTICE_COLUMN, cap.period), num_groups=cap.practice_periods)
            )
    return tuple(out)


@dataclass(frozen=True, slots=True)
class PatientChange:
    """How far one patient can move a release whose cells each move by at most 1 per row:
    `l1` (the sum of |changes|, pure DP) and `l2_squared` (the sum of squared changes,
    zCDP). Multiply by the SUM clamp's magnitude for a sum."""

    l1: int
    l2_squared: int

    @staticmethod
    def rows(k: int) -> PatientChange:
        """At most k rows in total, possibly all in one cell: l1 = l2 = k."""
        return PatientChange(k, k * k)


def patient_change(
    bounds: tuple[GroupingBound, ...], group_by: tuple[str, ...], cells: int
) -> PatientChange:
    """The change bound of a release of `cells` cells grouped by `group_by`, by OpenDP's
    rules (0.16).

    The total bound K (by=()) always holds. A per-group cap carries down to finer groupings
    (a bound by `week` caps every (week, x) cell), a group-count cap carries up to coarser
    ones (a patient in at most c (practice, week) groups is in at most c weeks). With c the
    smallest per-group cap and g the smallest group count that apply (g at most K, each row
    being in one group, and at most the number of public keys released, since only keyed
    cells are released):

        l1 = min(K, c * g)            l2^2 = min(K^2, c^2 * g)
    """
    if cells < 1:
        raise ValueError("a release has at least one cell")
    totals = [b.per_group for b in bounds if not b.by and b.per_group is not None]
    if not totals:
        raise ValueError("the total bound K must be among the bounds")
    k_total = min(totals)
    grouping = set(group_by)
    per_group = min(
        [k_total]
        + [b.per_group for b in bounds if b.per_group is not None and set(b.by) <= grouping]
    )
    groups = min(
        [k_total, cells]
        + [b.num_groups for b in bounds if b.num_groups is not None and set(b.by) >= grouping]
    )
    return PatientChange(
        l1=min(k_total, per_group * groups),
        l2_squared=min(k_total * k_total, per_group * per_group * groups),
    )


def _int_or_none(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"a period bound must be a whole number, not {value!r}")
    return value
