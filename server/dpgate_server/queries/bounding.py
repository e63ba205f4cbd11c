"""Choose how a query bounds each patient's contribution, from the version's record.

DESIGN.md "Dataset versions and releases": a version cut to k rows per patient and
*verified* at publish may be queried with OpenDP's row-level unit (`contributions=k`) and
no truncation, 8-37x faster (OPENDP_POLARS.md section 12). OpenDP cannot tell a bounded
file from a raw one, so the choice comes only from the manifest's ContributionBound; any
version without a verified record is queried with the patient-level unit and per-query
truncation, which is sound on any file.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpgate_server.queries.model import BoundingMethod
from dpgate_server.store.period_bounds import (
    GroupingBound,
    PatientChange,
    grouping_bounds,
    patient_change,
)
from dpgate_server.store.store import ContributionBound


@dataclass(frozen=True, slots=True)
class Bounding:
    """How a query's plan bounds each patient, and what it is charged for.

    Attributes:
        method: publish-time (row-level unit) or per-query truncation (patient unit).
        max_contributions: k, the rows per patient the cost is computed for.
        period_bounds: publish-time only: the total bound and the per-period bounds the
            version's manifest records as verified (OpenDP's `Bound`s of the row-level
            unit); empty when the version was bounded by its total alone.
    """

    method: BoundingMethod
    max_contributions: int
    period_bounds: tuple[GroupingBound, ...] = ()

    @property
    def d_in(self) -> int:
        """OpenDP's input distance: k rows, or 1 patient (who keeps at most k rows).

        With period bounds, OpenDP's d_in is the bounds themselves (plans.opendp_d_in)."""
        return self.max_contributions if self.method is BoundingMethod.PUBLISH_TIME else 1

    def change(self, group_by: tuple[str, ...], cells: int) -> PatientChange:
        """How far one patient can move a release of `cells` cells grouped by `group_by`
        (per unit of per-row sensitivity): k rows in one cell, unless verified period bounds
        say less."""
        if self.period_bounds:
            return patient_change(self.period_bounds, group_by, cells)
        return PatientChange.rows(self.max_contributions)


def choose_bounding(record: ContributionBound | None, requested: int) -> Bounding:
    """The cheapest sound bounding for a query allowed `requested` rows per patient.

    - A verified version bound K <= requested: every patient already has at most K rows
      in the files, so use the row-level unit and charge K (no truncation filter); with
      verified per-period bounds too, charge what they allow for the query's grouping.
    - Otherwise (no record, unverified, or the query asks for fewer rows than K): keep
      `requested` random rows per patient after the filters, and charge `requested`.
    """
    if requested < 1:
        raise ValueError("requested contributions must be at least 1")
    if record is not None and record.verified and 1 <= record.max_contributions <= requested:
        period = (
            grouping_bounds(record.max_contributions, record.period_bounds)
            if record.period_bounds
            else ()
        )
        return Bounding(BoundingMethod.PUBLISH_TIME, record.max_contributions, period)
    return Bounding(BoundingMethod.PER_QUERY, requested)
