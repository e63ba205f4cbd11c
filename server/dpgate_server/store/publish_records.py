"""What a version's manifest records of the DP statistics its publish released.

A publish may spend privacy budget on a few statistics of the version it builds (the bias
figure below; a bound chosen by a DP quantile). Each such spend is declared by an
administrator setting, charged to the dataset's cap by the ledger and recorded here, in the
version's manifest, charged or not (`PublishSpendRecord`). The statistics themselves are
stored once, with the version, and served from here to every requester for free: they are
never recomputed (a second draw would average the noise away).

The bias figure (`BiasFigure`): for each contribution bound the version enforces (the total
K, then each per-period cap), a DP count of the patients from whom that bound's step of the
publish cut removed at least one row, with its interval. Only the noisy counts are kept; the
exact counts never leave the publish's memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dpgate_server.vocabulary.accounting import Accounting

BIAS_FIGURE = "bias_figure"
"""The purpose a bias figure's spend is charged under."""
MECHANISMS = ("discrete_laplace", "discrete_gaussian")
"""The noise a publish-time count may carry (the engine's `Mechanism` values)."""


class BoundKind(StrEnum):
    """Which bound of the publish cut a count is about (store/period_bounds.py)."""

    TOTAL_ROWS = "total_rows"
    """K: rows per patient in the whole version (`max_contributions`)."""
    ROWS_PER_PERIOD = "rows_per_period"
    """k: rows per patient in one week or month."""
    PERIODS = "periods"
    """g: weeks or months per patient."""
    PRACTICE_PERIODS = "practice_periods"
    """Distinct (practice, week or month) groups per patient."""


@dataclass(frozen=True, slots=True)
class PublishSpendRecord:
    """A spend a publish declared for one statistic, as the manifest records it.

    Attributes:
        purpose: what the spend is for (e.g. BIAS_FIGURE).
        accounting: pure DP (epsilon) or zCDP (rho).
        declared_units: the spend the setting declared, in ledger units.
        charged: whether the dataset's cap paid it (the statistic was released).
        spend_id: the ledger's record of the charge (None when not charged).
        note: why it was not charged ("" when it was).
    """

    purpose: str
    accounting: Accounting
    declared_units: int
    charged: bool
    spend_id: str | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "purpose": self.purpose,
            "accounting": self.accounting.value,
            "declared_units": self.declared_units,
            "charged": self.charged,
            "spend_id": self.spend_id,
            "note": self.note,
        }

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> PublishSpendRecord:
        return PublishSpendRecord(
            purpose=str(raw["purpose"]),
            accounting=Accounting(raw["accounting"]),
            declared_units=int(raw["declared_units"]),
            charged=bool(raw["charged"]),
            spend_id=None if raw.get("spend_id") is None else str(raw["spend_id"]),
            note=str(raw.get("note", "")),
        )


@dataclass(frozen=True, slots=True)
class DroppedPatients:
    """The DP count of patients who lost rows to one bound, and its interval.

    Attributes:
        bound: which bound.
        period: "week" or "month" for a per-period bound; None for the total.
        limit: the bound's value (24 rows; 3 rows a week; 10 weeks; ...).
        value: the noisy count (unbiased: may be negative or above the true count).
        half_width: `value +/- half_width` covers the true count at the figure's level.
    """

    bound: BoundKind
    period: str | None
    limit: int
    value: int
    half_width: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "bound": self.bound.value,
            "period": self.period,
            "limit": self.limit,
            "value": self.value,
            "half_width": self.half_width,
        }

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> DroppedPatients:
        period = raw.get("period")
        return DroppedPatients(
            bound=BoundKind(raw["bound"]),
            period=None if period is None else str(period),
            limit=int(raw["limit"]),
            value=int(raw["value"]),
            half_width=int(raw["half_width"]),
        )


@dataclass(frozen=True, slots=True)
class BiasFigure:
    """The bias figure of a version: released (counts with their noise), or why not.

    Attributes:
        released: whether the figure was released (its spend charged).
        note: why not, in words, when it was not ("" when released).
        counts: one per bound, in the cut's order (empty when not released).
        mechanism: "discrete_laplace" (pure DP) or "discrete_gaussian" (zCDP).
        noise_scale: every count's noise scale (each count has sensitivity 1).
        confidence_level: the level of every `half_width`.
        accounting: how its spend is measured.
        spend_units: what the dataset's cap paid for it, in ledger units (0 if not
            released).
    """

    released: bool
    note: str = ""
    counts: tuple[DroppedPatients, ...] = field(default=())
    mechanism: str = ""
    noise_scale: float = 0.0
    confidence_level: float = 0.0
    accounting: Accounting | None = None
    spend_units: int = 0

    def __post_init__(self) -> None:
        if self.released:
            if not self.counts or self.mechanism not in MECHANISMS or self.noise_scale <= 0:
                raise ValueError("a released figure has counts, a mechanism and a scale")
            if self.accounting is None or self.spend_units < 1:
                raise ValueError("a released figure records its spend")
        elif self.counts or not self.note:
            raise ValueError("a figure not released has no counts and says why")

    @staticmethod
    def withheld(note: str) -> BiasFigure:
        """No figure for this version, and why (the publish went on without it)."""
        return BiasFigure(released=False, note=note)

    def to_dict(self) -> dict[str, Any]:
        if not self.released:
            return {"released": False, "note": self.note}
        return {
            "released": True,
            "counts": [c.to_dict() for c in self.counts],
            "mechanism": self.mechanism,
            "noise_scale": self.noise_scale,
            "confidence_level": self.confidence_level,
            "accounting": None if self.accounting is None else self.accounting.value,
            "spend_units": self.spend_units,
        }

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> BiasFigure:
        if not raw.get("released"):
            return BiasFigure.withheld(str(raw.get("note") or "not released"))
        return BiasFigure(
            released=True,
            counts=tuple(DroppedPatients.from_dict(c) for c in raw["counts"]),
            mechanism=str(raw["mechanism"]),
            noise_scale=float(raw["noise_scale"]),
            confidence_level=float(raw["confidence_level"]),
            accounting=Accounting(raw["accounting"]),
            spend_units=int(raw["spend_units"]),
        )
