"""Derived answers: a new question answered by adding up cells of a release already made.

A release's cells each carry one independent noise draw. When a new question on the same
dataset version asks for sums of those cells, its answer is post-processing of the
release: it reads no data, adds no noise and costs nothing (DESIGN.md, "Growing into a
national service"). Its interval is the exact one of a sum of that many independent draws
(`dpgate_shared.noise_sums`, the module the client's `sum_cells` uses).

A release can answer a question exactly, and only, when (`selections`):

- both were bounded at publish (the version was cut to K rows per patient and verified,
  so every query of the version reads the same bounded table: summed cells of one
  question are the true value of the other; per-query truncation draws its own rows);
- they are on the same dataset version, with the same aggregate, column, accounting and
  contribution bound, and the release is not itself derived;
- the question's group-by is a subset of the release's;
- the question's filters are the release's filters plus filters on the release's
  group-by columns (selections of its cells); a filter on any other column needs rows
  the cells do not separate, so it is not derivable;
- the selected cells, added up by the question's group-by, give exactly the cells the
  question would have (its public key set), each from at least one released cell
  (`derive` checks this against the question's key frame).

Summing over a column drops none of its rows only if every row's value is in the column's
public key set: ingest refuses values outside the published labels, dates outside the
period and unknown practices, and requires every grouped value (a test checks the demo
data), so the cells of a grouped release partition its filtered rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

import polars as pl

from dpgate_server.canonical import canonical_json, sha256_hex
from dpgate_server.queries import cell_table
from dpgate_server.queries.engine import PreparedQuery
from dpgate_server.queries.expressions import conjunction
from dpgate_server.queries.keys import KeySets
from dpgate_server.queries.model import BoundingMethod, CanonicalFilter, CanonicalQuery, Release
from dpgate_server.store.store import DatasetVersion
from dpgate_shared import noise_sums

CELLS = cell_table.SUMMED_CELLS


class DerivePreference(StrEnum):
    """Whether a requester accepts a derived answer (free) or wants a fresh release."""

    FRESH = "fresh"
    """A release computed from the data, charged (free only as an identical repeat)."""
    IF_AS_ACCURATE = "if_as_accurate"
    """A derived answer if its widest interval is no wider than the fresh answer's (at
    the spend or target accuracy asked), else fresh: never a worse answer than asked."""
    IF_ANY = "if_any"
    """A derived answer whenever one exists, however wide (free), else fresh."""

    def accepts(self, derivation: Derivation, fresh_half_width: int) -> bool:
        """Whether this preference takes `derivation` over a fresh answer this wide."""
        if self is DerivePreference.IF_ANY:
            return True
        return self is DerivePreference.IF_AS_ACCURATE and (
            derivation.half_width <= fresh_half_width
        )


@dataclass(frozen=True, slots=True)
class Derivation:
    """A derived answer: the cells of one release, selected and added up; free.

    Attributes:
        source_release_id: the ledger's id of the release the cells come from.
        release: the answer as a release of the asked question (`cost_units` 0); its table
            has the group-by columns, `value`, `ci_low`, `ci_high`, then `cells`.
        most_cells: the most released cells added into one answer cell (the widest
            interval's).
    """

    source_release_id: str
    release: Release
    most_cells: int

    @property
    def half_width(self) -> int:
        """The widest interval half-width among the answer's cells."""
        return self.release.half_width


def selections(
    asked: CanonicalQuery, bounding: BoundingMethod, source: Release
) -> tuple[CanonicalFilter, ...] | None:
    """The filters that select the release's cells for `asked`, or None if not derivable.

    `bounding` is how `asked` would be bounded if run fresh: a question truncated per
    query reads another table than the publish-bounded cells, so it is never derived.
    """
    query = source.query
    if (
        bounding is not BoundingMethod.PUBLISH_TIME
        or source.bounding is not BoundingMethod.PUBLISH_TIME
        or (query.dataset_id, query.dataset_version) != (asked.dataset_id, asked.dataset_version)
        or (query.aggregate, query.column) != (asked.aggregate, asked.column)
        or query.accounting is not asked.accounting
        or query.max_contributions != asked.max_contributions
        or CELLS in query.group_by
        or not set(asked.group_by) <= set(query.group_by)
        or not set(query.filters) <= set(asked.filters)
    ):
        return None
    extra = tuple(f for f in asked.filters if f not in query.filters)
    if any(f.column not in query.group_by for f in extra):
        return None
    return extra


def derive(
    prepared: PreparedQuery,
    source_release_id: str,
    source: Release,
    keys: pl.DataFrame | None,
) -> Derivation | None:
    """The answer to `prepared` from `source`'s cells, or None if they cannot give it.

    Args:
        prepared: the asked question, priced on the version `source` was computed on.
        source_release_id: the ledger's id of `source`.
        source: a release computed from data (never a derived one).
        keys: the asked question's public key frame (`answer_keys`); None when ungrouped.
    """
    extra = selections(prepared.query, prepared.bounding.method, source)
    if extra is None:
        return None
    cells = source.frame()
    condition = conjunction(extra)
    if condition is not None:
        cells = cells.filter(condition)
    by = list(prepared.query.group_by)
    sums = [pl.col(cell_table.VALUE).sum().cast(pl.Int64), pl.len().cast(pl.Int64).alias(CELLS)]
    if by:
        assert keys is not None
        totals = cells.group_by(by).agg(sums)
        if totals.height != keys.height:
            return None
        joined = keys.join(totals, on=by, how="inner", nulls_equal=True)
        if joined.height != keys.height:
            return None
        totals = joined.sort(by, nulls_last=False)
    else:
        totals = cells.select(sums)
        if int(totals.item(0, CELLS)) == 0:
            return None
    table = _with_intervals(totals, by, source, prepared.confidence_level)
    most = int(table.get_column(CELLS).max())  # type: ignore[arg-type]
    widest = noise_sums.half_width(
        source.mechanism.value, source.noise_scale, prepared.confidence_level, most
    )
    release = Release(
        query=prepared.query,
        key=derived_key(prepared.query, source.key),
        table=cell_table.encode(table),
        cell_count=table.height,
        mechanism=source.mechanism,
        noise_scale=source.noise_scale,
        cost_units=0,
        bounding=source.bounding,
        confidence_level=prepared.confidence_level,
        half_width=widest,
    )
    return Derivation(source_release_id, release, most)


def best_derivation(
    prepared: PreparedQuery,
    sources: Iterable[tuple[str, Release]],
    keys: Callable[[], pl.DataFrame | None],
) -> Derivation | None:
    """The derived answer from the source with the least noise per answer cell (its
    draws' variance times its cells per answer cell), or None.

    Candidates are tried in that order and the first that adds up to the question is
    taken, so usually only one release is decoded.
    """
    candidates = [
        (release_id, release)
        for release_id, release in sources
        if selections(prepared.query, prepared.bounding.method, release) is not None
    ]
    if not candidates:
        return None

    def expected_variance(candidate: tuple[str, Release]) -> float:
        release = candidate[1]
        per_cell = noise_sums.variance(release.mechanism.value, release.noise_scale)
        return per_cell * release.cell_count / max(1, prepared.cells)

    frame = keys() if prepared.query.group_by else None
    for release_id, release in sorted(candidates, key=expected_variance):
        found = derive(prepared, release_id, release, frame)
        if found is not None:
            return found
    return None


def answer_keys(version: DatasetVersion, prepared: PreparedQuery) -> pl.DataFrame | None:
    """The cells the asked question has (its public key frame, as released), None if
    ungrouped: public tables and metadata only, never the private rows."""
    query = prepared.query
    if not query.group_by:
        return None
    schema = version.scan_appointments().collect_schema()
    frame = KeySets.of_version(version, dict(schema)).frame(query.group_by, query.filters)
    return cell_table.wire_keys(frame.collect(), query.group_by)


def derived_key(asked: CanonicalQuery, source_key: str) -> str:
    """The key of a derived answer: never a fresh release's key (the asked question's)."""
    return sha256_hex(canonical_json({"derived_from": source_key, "query": asked.to_dict()}))


def _with_intervals(
    totals: pl.DataFrame, by: list[str], source: Release, confidence_level: float
) -> pl.DataFrame:
    """Keys, value, the exact interval of a sum of each row's `cells` draws, then `cells`."""
    counts = totals.get_column(CELLS).unique().to_list()
    widths = {
        int(n): float(
            noise_sums.half_width(source.mechanism.value, source.noise_scale, confidence_level, n)
        )
        for n in counts
    }
    half = pl.col(CELLS).replace_strict(widths, return_dtype=pl.Float64)
    value = pl.col(cell_table.VALUE)
    return totals.select(
        *by,
        value,
        (value.cast(pl.Float64) - half).alias(cell_table.CI_LOW),
        (value.cast(pl.Float64) + half).alias(cell_table.CI_HIGH),
        pl.col(CELLS),
    )
