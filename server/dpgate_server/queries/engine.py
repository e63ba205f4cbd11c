"""The query engine: validate, price, plan, run and package a release.

The gRPC layer calls, in order:

1. `prepare(version, query)` -> PreparedQuery: everything decided without private data
   (checks, bounding, cells, spend, noise scale, cost, release key). It raises
   InvalidQuery for a bad query; the caller looks `prepared.key` up in the ledger (a hit is
   returned free) and checks the budget against `prepared.cost_units`.
2. `execute(version, prepared)` -> Release: builds the OpenDP measurement, cross-checks its
   cost, reads the data and adds noise. It does not debit: the ledger stores the release
   and debits in one transaction.

`run(version, query)` is both steps; `preview(...)` is step 1 reported as a Preview.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import polars as pl
from opendp.accuracy import summarize_polars_measurement
from opendp.mod import OpenDPException

from dpgate_server.queries import accuracy, cell_table, cost, process_settings
from dpgate_server.queries.bounding import Bounding, choose_bounding
from dpgate_server.queries.cost import Calibration
from dpgate_server.queries.count_column import cheapest_count_column
from dpgate_server.queries.errors import EngineError, InvalidQuery
from dpgate_server.queries.keys import KeySets
from dpgate_server.queries.limits import QueryLimits
from dpgate_server.queries.memory import estimated_worker_bytes
from dpgate_server.queries.model import (
    AggregateFunction,
    BoundingMethod,
    CanonicalQuery,
    Mechanism,
    Query,
    Release,
)
from dpgate_server.queries.plans import VALUE_COLUMN, build_plan, make_measurement, opendp_d_in
from dpgate_server.queries.validation import ValidatedQuery, validate
from dpgate_server.spend import units_to_decimal, units_to_float
from dpgate_server.store.metadata import DatasetMetadata
from dpgate_server.store.period_bounds import GroupingBound
from dpgate_server.store.store import ContributionBound, DatasetVersion
from dpgate_server.vocabulary.errors import ErrorReason

_MAX_TARGET_STEPS = 64
"""Unit steps tried when rounding lands a target accuracy one step short."""


@dataclass(frozen=True, slots=True)
class PreparedQuery:
    """A checked, priced query on one version; nothing private has been read.

    Attributes:
        query: the canonical question; `key` is its release key.
        validated: the checked parts the plan is built from.
        bounding: publish-time (row-level unit) or per-query truncation.
        calibration: noise scale and dpgate's cost (`cost_units`).
        cells: how many cells the release will have.
        confidence_level: the requested interval level.
        half_width: the intervals' half-width at that level.
        truncation_note: what bounding drops, from the version's published record.
    """

    query: CanonicalQuery
    key: str
    validated: ValidatedQuery
    bounding: Bounding
    calibration: Calibration
    cells: int
    confidence_level: float
    half_width: int
    truncation_note: str

    @property
    def cost_units(self) -> int:
        return self.calibration.cost_units


@dataclass(frozen=True, slots=True)
class Preview:
    """What a query would cost and how accurate it would be; free, reads no private data.

    Attributes:
        dataset_id: dataset.
        dataset_version: the version previewed, or None for a metadata-only preview.
        key: the release key the query would have on that version (None without one).
        accounting: pure DP or zCDP.
        spend_units: the spend (a target accuracy resolved to the smallest reaching it).
        mechanism: noise distribution.
        noise_scale: its scale.
        confidence_level: interval level.
        half_width: every cell's interval half-width at that level.
        cells: number of cells (metadata-only previews count columns that share a
            public table as a cross product: an upper bound).
        max_contributions: the bound the query would be charged for.
        bounding: publish-time or per-query.
        truncation_note: what the bound drops, as the version's record states it.
        question: the canonical question on that version (None without one): the same
            question on another version is `replace(question, dataset_version=...)`.
    """

    dataset_id: str
    dataset_version: str | None
    key: str | None
    accounting: str
    spend_units: int
    mechanism: Mechanism
    noise_scale: float
    confidence_level: float
    half_width: int
    cells: int
    max_contributions: int
    bounding: BoundingMethod
    truncation_note: str
    question: CanonicalQuery | None = None


def prepare(
    version: DatasetVersion, query: Query, limits: QueryLimits | None = None
) -> PreparedQuery:
    """Check and price `query` on `version`; raises InvalidQuery (nothing is read or spent)."""
    dtypes = version.scan_appointments().collect_schema()
    return _prepare(
        version.metadata,
        record=version.manifest.bound,
        version_name=version.version,
        keys=KeySets.of_version(version, dict(dtypes)),
        query=query,
        limits=QueryLimits() if limits is None else limits,
    )


def execute(version: DatasetVersion, prepared: PreparedQuery) -> Release:
    """Run a prepared query: cross-check the cost with OpenDP, read the data, add noise.

    Raises CostMismatchError (refused, logged) if OpenDP's cost for the plan exceeds
    dpgate's, and EngineError if OpenDP refuses or applies another scale than dpgate's, or
    if this process was not configured (`process_settings.configure_process`).
    """
    if (version.dataset_id, version.version) != (
        prepared.query.dataset_id,
        prepared.query.dataset_version,
    ):
        raise ValueError("a prepared query runs only on the version it was prepared for")
    process_settings.check_configured()
    calibration = prepared.calibration
    try:
        scan, measurement = build_measurement(version, prepared)
        _check_scale(measurement, calibration)
        d_in = opendp_d_in(prepared.bounding, version.metadata.privacy_unit)
        charge = units_to_float(calibration.cost_units)
        cost.cross_check(
            calibration.cost_units,
            float(measurement.map(d_in)),
            bool(measurement.check(d_in, charge)),
            prepared.query.to_json(),
        )
        frame = measurement(scan).collect()
    except OpenDPException as exc:
        raise EngineError(f"OpenDP refused dpgate's plan: {exc}") from exc
    return _release(prepared, frame)


def build_measurement(version: DatasetVersion, prepared: PreparedQuery) -> tuple[pl.LazyFrame, Any]:
    """The scan of the version's private table and the OpenDP measurement `execute` runs.

    Exposed for tests and benchmarks; calling the measurement on the scan releases noisy
    values, so nothing but `execute` may do that outside tests.
    """
    scan = version.scan_appointments()
    schema = scan.collect_schema()
    v = prepared.validated
    keys = None
    if v.group_by:
        keys = KeySets.of_version(version, dict(schema)).frame(v.group_by, v.filters)
    privacy_unit = version.metadata.privacy_unit
    count_column = None
    if not v.group_by and not v.filters and v.aggregate is AggregateFunction.COUNT:
        count_column = cheapest_count_column(version.appointment_paths(), schema, privacy_unit)
    plan = build_plan(schema, v, prepared.bounding, privacy_unit, keys, count_column)
    measurement = make_measurement(
        scan, version.metadata, prepared.bounding, plan, prepared.calibration.global_scale
    )
    return scan, measurement


def run(version: DatasetVersion, query: Query, limits: QueryLimits | None = None) -> Release:
    """Validate, price and answer `query` on `version` (does not debit: the ledger does)."""
    return execute(version, prepare(version, query, limits))


def preview(
    source: DatasetVersion | DatasetMetadata, query: Query, limits: QueryLimits | None = None
) -> Preview:
    """Accuracy and cost of `query` without data or budget.

    With a version: its verified bound, its public key tables and its release key. With
    metadata alone: per-query bounding at the requested bound, and cells counted from the
    published values (columns sharing a key table as a cross product, an upper bound).
    """
    limits = QueryLimits() if limits is None else limits
    if isinstance(source, DatasetVersion):
        return summarize(prepare(source, query, limits), source.version)
    prepared = _prepare(
        source,
        record=None,
        version_name="",
        keys=KeySets.of_metadata(source),
        query=query,
        limits=limits,
    )
    return summarize(prepared, None)


def summarize(prepared: PreparedQuery, version: str | None) -> Preview:
    """The preview of a prepared query (`version` None: prepared from metadata alone)."""
    return Preview(
        dataset_id=prepared.query.dataset_id,
        dataset_version=version,
        key=None if version is None else prepared.key,
        accounting=prepared.query.accounting.value,
        spend_units=prepared.query.spend_units,
        mechanism=prepared.calibration.mechanism,
        noise_scale=prepared.calibration.noise_scale,
        confidence_level=prepared.confidence_level,
        half_width=prepared.half_width,
        cells=prepared.cells,
        max_contributions=prepared.bounding.max_contributions,
        bounding=prepared.bounding.method,
        truncation_note=prepared.truncation_note,
        question=None if version is None else prepared.query,
    )


def _prepare(
    metadata: DatasetMetadata,
    *,
    record: ContributionBound | None,
    version_name: str,
    keys: KeySets,
    query: Query,
    limits: QueryLimits,
) -> PreparedQuery:
    validated = validate(metadata, query, limits)
    bounding = choose_bounding(record, validated.max_contributions)
    cells = _check_cells(keys, validated, limits)
    _check_memory(cells, validated, limits)
    calibration = _calibrate(validated, bounding, cells, limits)
    canonical = CanonicalQuery(
        dataset_id=validated.dataset_id,
        dataset_version=version_name,
        aggregate=validated.aggregate,
        column=validated.column,
        filters=validated.filters,
        group_by=validated.group_by,
        accounting=validated.accounting,
        spend_units=calibration.cost_units
        if validated.spend_units is None
        else validated.spend_units,
        max_contributions=bounding.max_contributions,
    )
    return PreparedQuery(
        query=canonical,
        key=canonical.key(),
        validated=validated,
        bounding=bounding,
        calibration=calibration,
        cells=cells,
        confidence_level=validated.confidence_level,
        half_width=accuracy.half_width(
            calibration.mechanism, calibration.noise_scale, validated.confidence_level
        ),
        truncation_note=_truncation_note(bounding),
    )


def _check_cells(keys: KeySets, v: ValidatedQuery, limits: QueryLimits) -> int:
    if not v.group_by:
        return 1
    cells = keys.count(v.group_by, v.filters)
    if cells > limits.max_cells:
        raise InvalidQuery(
            ErrorReason.TOO_MANY_CELLS,
            "group_by",
            f"grouping by {', '.join(v.group_by)} gives {cells:,} cells, at most "
            f"{limits.max_cells:,} are allowed; group by fewer or coarser columns, or filter "
            "the grouped columns to fewer values.",
        )
    if cells == 0:
        raise InvalidQuery(
            ErrorReason.BAD_VALUE,
            "filters",
            f"the filters exclude every public key of {', '.join(v.group_by)}, so the answer "
            "would have no cells; loosen the filters on the grouped columns.",
        )
    return cells


def _check_memory(cells: int, v: ValidatedQuery, limits: QueryLimits) -> None:
    """Refuse, before any data is read, an answer too large for a query worker's memory
    (estimated from the cells and columns alone: queries.memory)."""
    if limits.worker_memory_bytes is None:
        return
    needed = estimated_worker_bytes(cells, len(v.group_by) + 1)
    if needed <= limits.worker_memory_bytes:
        return
    grouping = (
        f"grouping by {', '.join(v.group_by)} gives {cells:,} cells, which"
        if v.group_by
        else "the answer"
    )
    raise InvalidQuery(
        ErrorReason.TOO_MANY_CELLS,
        "group_by",
        f"{grouping} needs about {needed / 2**20:,.0f} MiB in a query worker; a worker may use "
        f"{limits.worker_memory_bytes / 2**20:,.0f} MiB (limits.worker_memory_mb). Group by "
        "fewer or coarser columns, or filter the grouped columns to fewer values; nothing "
        "was charged.",
    )


def _calibrate(
    v: ValidatedQuery, bounding: Bounding, cells: int, limits: QueryLimits
) -> Calibration:
    k, sensitivity = bounding.change(v.group_by, cells), v.sensitivity
    if v.spend_units is not None:
        return cost.calibrate(v.accounting, k, sensitivity, v.spend_units)
    assert v.target_half_width is not None
    mechanism = cost.mechanism_for(v.accounting)
    target = math.floor(v.target_half_width)
    ceiling = limits.max_spend_units(v.accounting)
    widest = accuracy.largest_scale_for_half_width(
        mechanism, v.target_half_width, v.confidence_level
    )
    if widest > 0:
        units = cost.spend_for_noise_scale(v.accounting, k, sensitivity, widest)
        for _ in range(_MAX_TARGET_STEPS):
            if units > ceiling:
                break
            calibration = cost.calibrate(v.accounting, k, sensitivity, units)
            width = accuracy.half_width(mechanism, calibration.noise_scale, v.confidence_level)
            if width <= target:
                return calibration
            units += 1
    best = cost.calibrate(v.accounting, k, sensitivity, ceiling)
    best_width = accuracy.half_width(mechanism, best.noise_scale, v.confidence_level)
    measure = "epsilon" if mechanism is Mechanism.DISCRETE_LAPLACE else "rho"
    raise InvalidQuery(
        ErrorReason.UNREACHABLE_ACCURACY,
        "target_half_width",
        f"+/-{v.target_half_width:g} at {v.confidence_level:.0%} needs more than the per-query "
        f"maximum {measure} {units_to_decimal(ceiling)}; the best reachable is "
        f"+/-{best_width}. Accept a wider interval, a lower confidence level, or a smaller "
        "max_contributions.",
    )


def _check_scale(measurement: Any, calibration: Calibration) -> None:
    summary = summarize_polars_measurement(measurement)
    scales = summary.get_column("scale").to_list()
    # OpenDP multiplies global_scale by the sensitivity in its own float arithmetic, so its
    # scale may differ from dpgate's in the last bits; the cost itself is cross-checked
    # exactly against OpenDP's map(d_in), so only a real disagreement is refused here.
    if len(scales) != 1 or not math.isclose(
        float(scales[0]), calibration.noise_scale, rel_tol=1e-9
    ):
        raise EngineError(
            f"OpenDP applies noise scale(s) {scales}, dpgate calibrated "
            f"{calibration.noise_scale!r}: the cost cannot be vouched for"
        )


def _release(prepared: PreparedQuery, frame: pl.DataFrame) -> Release:
    table = cell_table.build(frame, prepared.query.group_by, VALUE_COLUMN, prepared.half_width)
    return Release(
        query=prepared.query,
        key=prepared.key,
        table=cell_table.encode(table),
        cell_count=table.height,
        mechanism=prepared.calibration.mechanism,
        noise_scale=prepared.calibration.noise_scale,
        cost_units=prepared.calibration.cost_units,
        bounding=prepared.bounding.method,
        confidence_level=prepared.confidence_level,
        half_width=prepared.half_width,
    )


def _truncation_note(bounding: Bounding) -> str:
    k = bounding.max_contributions
    if bounding.method is BoundingMethod.PER_QUERY:
        return (
            f"Each patient contributes at most {k} of the rows matching the filters (chosen "
            "at random in this query); values estimate that truncated table, and intervals do "
            "not cover the rows dropped."
        )
    # Never quote the version's observed row counts here: they are exact aggregates of
    # private data (a differencing attack across versions would read them).
    periods = "".join(f", {_period_words(b)}" for b in bounding.period_bounds if b.by)
    return (
        f"This version was cut to at most {k} random rows per patient{periods} when it was "
        "published; values estimate the bounded table, and intervals do not cover the rows "
        "dropped."
    )


def _period_words(bound: GroupingBound) -> str:
    group = " and ".join(bound.by).replace("practice_code", "practice")
    parts = []
    if bound.per_group is not None:
        parts.append(f"at most {bound.per_group} per {group}")
    if bound.num_groups is not None:
        parts.append(
            f"in at most {bound.num_groups} {group} groups"
            if len(bound.by) > 1
            else f"in at most {bound.num_groups} {group}s"
        )
    return ", ".join(parts)
