"""The bias figure: how many patients lost rows to each contribution bound, released once.

Publish-time bounds make every answer on a version estimate the *bounded* table: totals
are low by the rows the bounds dropped, and no interval covers that bias. So each
published version releases, once, a DP count of the patients from whom each step of the
publish cut (store.period_bounding.cut_steps: each per-period cap, then the total K)
removed at least one row. A patient is in each count at most once, so each count has
sensitivity 1; all are noised together by one OpenDP measurement at the spend an
administrator declared (`BiasFigurePolicy`, config `publishing.bias_figure`), charged to the
dataset's cap (governance/publish_spends.py), and stored in the version's manifest with
their intervals. Every requester reads it free from there (DescribeDataset); it is never
recomputed, so no requester can make the service draw its noise again.

Life of the exact counts: tallied bucket by bucket in the bounding pass (`DroppedTally`),
noised as soon as that pass ends (`noise_tally`), then dropped. They are never logged,
stored, served or shown; only the noisy figure is kept, and only if its spend is charged
(`settle_figure`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from dpgate_server.governance.publish_spends import DeclaredSpend
from dpgate_server.queries.errors import CostMismatchError
from dpgate_server.queries.publish_counts import NoisyCounts, noisy_patient_counts
from dpgate_server.store.period_bounding import CutStep
from dpgate_server.store.publish_records import (
    BIAS_FIGURE,
    BiasFigure,
    BoundKind,
    DroppedPatients,
    PublishSpendRecord,
)
from dpgate_server.vocabulary.accounting import Accounting

_log = logging.getLogger(__name__)

DEFAULT_EPSILON_UNITS = 50_000_000
"""epsilon 0.05 for a pure-DP dataset's figure: with the total bound alone, +/- 60 patients
at 95% (integer Laplace, scale 20)."""
DEFAULT_RHO_UNITS = 500_000
"""rho 0.0005 for a zCDP dataset's figure: with the total bound alone, +/- 62 patients at
95% (integer Gaussian, sigma 31.6)."""


@dataclass(frozen=True, slots=True)
class BiasFigurePolicy:
    """An administrator's settings of the bias figure (config `publishing.bias_figure`).

    Attributes:
        enabled: whether publishes release a figure at all.
        epsilon_units: the figure's spend on a pure-DP dataset (ledger units), for all its
            counts together.
        rho_units: the figure's spend on a zCDP dataset (ledger units).
        max_per_version: how many times one version may spend on a figure (a version is
            sealed once, so more than one only lets a publish that died after charging be
            retried under the same version name with a figure).
        confidence_level: the level of the intervals stored with the figure.
    """

    enabled: bool = True
    epsilon_units: int = DEFAULT_EPSILON_UNITS
    rho_units: int = DEFAULT_RHO_UNITS
    max_per_version: int = 1
    confidence_level: float = 0.95

    def declared(self, accounting: Accounting) -> DeclaredSpend:
        """The spend declared for a dataset of this accounting."""
        units = self.epsilon_units if accounting is Accounting.PURE_DP else self.rho_units
        return DeclaredSpend(BIAS_FIGURE, accounting, units, self.max_per_version)


class DroppedTally:
    """Exact counts of patients cut by each step, summed over the buckets of a publish.

    Every patient's rows are in one bucket, so the sums count distinct patients. Private:
    it lives only until `noise_tally`.
    """

    def __init__(self, steps: Sequence[CutStep]) -> None:
        self.steps = tuple(steps)
        self._counts = [0] * len(self.steps)

    def add(self, patients_cut: Sequence[int]) -> None:
        """Add one bucket's counts (one per step, in the steps' order)."""
        if len(patients_cut) != len(self._counts):
            raise ValueError("one count per step of the cut")
        self._counts = [a + int(b) for a, b in zip(self._counts, patients_cut, strict=True)]

    def add_total(self, patients: int) -> None:
        """Add patients cut by the total bound (a cut with no period caps)."""
        if len(self.steps) != 1 or self.steps[0].kind is not BoundKind.TOTAL_ROWS:
            raise ValueError("the total alone is tallied only without period caps")
        self._counts[0] += int(patients)

    def exact_counts(self) -> tuple[int, ...]:
        """The exact counts, for `noise_tally` only."""
        return tuple(self._counts)


@dataclass(frozen=True, slots=True)
class NoisedFigure:
    """The figure noised but not yet paid for: released only once its spend is charged."""

    steps: tuple[CutStep, ...]
    noisy: NoisyCounts


def noise_tally(
    tally: DroppedTally, accounting: Accounting, policy: BiasFigurePolicy
) -> NoisedFigure | str:
    """Noise the tally's counts at the declared spend (OpenDP); or why it could not be."""
    spend = policy.declared(accounting)
    try:
        noisy = noisy_patient_counts(
            tally.exact_counts(), accounting, spend.units, policy.confidence_level
        )
    except (CostMismatchError, ValueError) as error:
        _log.error("the bias figure could not be noised (nothing charged): %s", error)
        return f"the figure's noise could not be drawn ({type(error).__name__}); nothing charged"
    return NoisedFigure(tally.steps, noisy)


def settle_figure(noised: NoisedFigure, record: PublishSpendRecord) -> BiasFigure:
    """The manifest's figure: the noisy counts if `record` says the cap paid, else why not.

    Counts are listed with the total bound first, then each period cap in the cut's order.
    """
    if not record.charged:
        return BiasFigure.withheld(record.note)
    noisy = noised.noisy
    pairs = list(zip(noised.steps, noisy.values, strict=True))
    pairs.sort(key=lambda pair: pair[0].kind is not BoundKind.TOTAL_ROWS)  # stable
    return BiasFigure(
        released=True,
        counts=tuple(
            DroppedPatients(step.kind, step.period, step.limit, value, noisy.half_width)
            for step, value in pairs
        ),
        mechanism=noisy.mechanism.value,
        noise_scale=noisy.noise_scale,
        confidence_level=noisy.confidence_level,
        accounting=record.accounting,
        spend_units=record.declared_units,
    )
