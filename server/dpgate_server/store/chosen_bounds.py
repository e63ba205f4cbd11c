"""Bounds chosen privately at publish, as values and as a version's manifest records them.

A bound is policy or chosen by a DP quantile at publish (governance/bound_choice.py), never
an observed maximum. The manifest records what the publish did: the bounds it was asked to
choose, the level and declared spend, and either the values chosen with each one's cost
(OpenDP's map) or why none were chosen (the dataset's cap could not pay) and the policy's
values stood. Everything here is public: the chosen values are DP outputs and become the
version's bounds, which analysts see anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dpgate_server.spend import describe
from dpgate_server.store.period_bounds import PERIOD_COLUMNS, PeriodBounds, PeriodCap
from dpgate_server.vocabulary.accounting import Accounting

TOTAL = "max_contributions"
"""The total bound K's name (as in the dataset metadata)."""
ROWS_SUFFIX = ".rows"
PERIODS_SUFFIX = ".periods"
BOUND_NAMES: tuple[str, ...] = (
    TOTAL,
    *(f"{period}{suffix}" for period in PERIOD_COLUMNS for suffix in (ROWS_SUFFIX, PERIODS_SUFFIX)),
)
"""Every bound that may be chosen privately."""
MECHANISM = "opendp make_private_quantile"


@dataclass(frozen=True, slots=True)
class ChosenBound:
    """One bound chosen by the DP quantile, and what it cost (OpenDP's map)."""

    name: str
    value: int
    max_candidate: int
    scale: float
    spend_units: int


@dataclass(frozen=True, slots=True)
class BoundChoice:
    """The chosen bounds of one publish and their spend (the sum of the bounds' costs)."""

    accounting: Accounting
    level: float
    bounds: tuple[ChosenBound, ...]

    @property
    def spend_units(self) -> int:
        return sum(b.spend_units for b in self.bounds)

    def value(self, name: str) -> int:
        for bound in self.bounds:
            if bound.name == name:
                return bound.value
        raise KeyError(name)

    def apply(self, max_contributions: int, policy: PeriodBounds) -> tuple[int, PeriodBounds]:
        """The bounds to enforce: the chosen ones in place of the policy's values.

        A chosen period bound replaces the policy's cap of that period (or adds one); the
        policy's other caps (practice_periods, unchosen ones) stay.
        """
        chosen = {b.name: b.value for b in self.bounds}
        caps = {cap.period: cap for cap in policy.caps}
        for period in PERIOD_COLUMNS:
            rows = chosen.get(period + ROWS_SUFFIX)
            periods = chosen.get(period + PERIODS_SUFFIX)
            if rows is None and periods is None:
                continue
            old = caps.get(period) or PeriodCap(period, rows=rows, periods=periods)
            caps[period] = PeriodCap(
                period,
                rows=rows if rows is not None else old.rows,
                periods=periods if periods is not None else old.periods,
                practice_periods=old.practice_periods,
            )
        return chosen.get(TOTAL, max_contributions), PeriodBounds(tuple(caps.values()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "mechanism": MECHANISM,
            "accounting": self.accounting.value,
            "level": self.level,
            "spend_units": self.spend_units,
            "spend": describe(self.spend_units, self.accounting.value),
            "bounds": [
                {
                    "name": b.name,
                    "value": b.value,
                    "candidates": [1, b.max_candidate],
                    "scale": b.scale,
                    "spend_units": b.spend_units,
                }
                for b in self.bounds
            ],
        }

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> BoundChoice:
        return BoundChoice(
            accounting=Accounting(raw["accounting"]),
            level=float(raw["level"]),
            bounds=tuple(
                ChosenBound(
                    name=str(entry["name"]),
                    value=int(entry["value"]),
                    max_candidate=int(entry["candidates"][1]),
                    scale=float(entry["scale"]),
                    spend_units=int(entry["spend_units"]),
                )
                for entry in raw["bounds"]
            ),
        )


def policy_values(max_contributions: int, bounds: PeriodBounds) -> dict[str, int | None]:
    """Every choosable bound's value under `bounds` (None: no such cap)."""
    out: dict[str, int | None] = {TOTAL: max_contributions}
    for period in PERIOD_COLUMNS:
        cap = bounds.cap(period)
        out[period + ROWS_SUFFIX] = None if cap is None else cap.rows
        out[period + PERIODS_SUFFIX] = None if cap is None else cap.periods
    return out


@dataclass(frozen=True, slots=True)
class ChosenBoundsRecord:
    """What a publish did about choosing bounds privately, for the version's manifest.

    Attributes:
        asked: the bounds it was asked to choose.
        declared_units: the spend declared for the choice (ledger units of the dataset's
            accounting); charged to the dataset's cap when `choice` is set.
        policy: the policy's value of each bound asked (None: no such cap); they stand when
            nothing was chosen.
        choice: the values chosen and their cost (OpenDP's map, at most declared); None when
            none were chosen.
        note: why none were chosen ("" when they were).
    """

    asked: tuple[str, ...]
    declared_units: int
    policy: dict[str, int | None]
    choice: BoundChoice | None = None
    note: str = ""

    @property
    def chosen(self) -> bool:
        return self.choice is not None

    def policy_bounds(
        self, max_contributions: int, bounds: PeriodBounds
    ) -> tuple[int, PeriodBounds]:
        """The policy's bounds, from the bounds of the version this record belongs to: each
        bound chosen goes back to the policy's value kept here (BoundChoice.apply undone),
        every other bound stays. A chosen value lasts one version, so the next publish
        starts from these, never from the last chosen ones.

        Raises:
            ValueError: the record keeps no policy value for a bound it chose.
        """
        if self.choice is None:
            return max_contributions, bounds
        names = {b.name for b in self.choice.bounds}
        missing = sorted(n for n in names if n not in self.policy)
        if missing:
            raise ValueError(f"the record keeps no policy value for {', '.join(missing)}")
        total = max_contributions
        if TOTAL in names:
            declared = self.policy[TOTAL]
            if declared is None:
                raise ValueError(f"the record keeps no policy value for {TOTAL}")
            total = declared
        caps = {cap.period: cap for cap in bounds.caps}
        for period in PERIOD_COLUMNS:
            rows, periods = period + ROWS_SUFFIX, period + PERIODS_SUFFIX
            cap = caps.get(period)
            if cap is None or not names & {rows, periods}:
                continue
            fields = {
                "rows": self.policy[rows] if rows in names else cap.rows,
                "periods": self.policy[periods] if periods in names else cap.periods,
                "practice_periods": cap.practice_periods,
            }
            if all(value is None for value in fields.values()):
                del caps[period]
            else:
                caps[period] = PeriodCap(period, **fields)
        return total, PeriodBounds(tuple(caps.values()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "asked": list(self.asked),
            "declared_units": self.declared_units,
            "policy": dict(self.policy),
            "chosen": None if self.choice is None else self.choice.to_dict(),
            "note": self.note,
        }

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> ChosenBoundsRecord:
        chosen = raw.get("chosen")
        return ChosenBoundsRecord(
            asked=tuple(str(n) for n in raw["asked"]),
            declared_units=int(raw["declared_units"]),
            policy={str(k): None if v is None else int(v) for k, v in raw["policy"].items()},
            choice=None if chosen is None else BoundChoice.from_dict(chosen),
            note=str(raw.get("note", "")),
        )
