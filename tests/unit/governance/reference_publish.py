"""The rows a publish must keep, computed the plain way: everything in memory at once.

This is the specification the streaming publish (governance/publishing.py) is tested
against: take every included practice's rows (staged, else carried from the current
version), drop opted-out patients, rank each row by its keyed hash under the version's
seed, keep each patient's `max_contributions` rows of lowest rank across all practices
(with per-period bounds: store.period_bounding's cut over all of a patient's rows, in
rank order), and add the practice hierarchy. The rank hash itself is checked against its
definition in tests/unit/store/test_bounding.py.
"""

from __future__ import annotations

from collections.abc import Collection

import polars as pl

from dpgate_server.governance.ingest import STAGED_COLUMNS
from dpgate_server.governance.publishing import HIERARCHY_COLUMNS
from dpgate_server.governance.staging import StagingArea
from dpgate_server.store.appointment_files import APPOINTMENTS_SCHEMA
from dpgate_server.store.bounding import LabelCodes, row_rank_hashes
from dpgate_server.store.period_bounding import PRIORITY, period_keep_mask
from dpgate_server.store.period_bounds import PeriodBounds
from dpgate_server.store.store import DatasetVersion


def reference_publish(
    base: DatasetVersion,
    staging: StagingArea,
    practices: pl.DataFrame,
    opted_out: Collection[int],
    max_contributions: int,
    seed: int,
    period_bounds: PeriodBounds | None = None,
) -> pl.DataFrame:
    """The rows of the version built from `base` and `staging` for the practices in the
    `practices` table (the included ones), in the appointments schema."""
    included = practices.get_column("practice_code").to_list()
    staged = [code for code in staging.practices() if code in included]
    carried = [code for code in included if code not in staged]
    parts = [pl.read_parquet(staging.path(code)) for code in staged]
    parts.append(
        pl.read_parquet([str(p) for p in base.appointment_paths()]).filter(
            pl.col("practice_code").is_in(carried)
        )
    )
    rows = pl.concat([part.select(list(STAGED_COLUMNS)).cast(STAGED_COLUMNS) for part in parts])
    rows = rows.filter(~pl.col("patient_key").is_in(sorted(opted_out)))
    rank = row_rank_hashes(rows.to_arrow(), LabelCodes(seed))
    ranked = rows.with_columns(rank=pl.Series(rank))
    if period_bounds:
        mask = period_keep_mask(
            ranked.with_columns(pl.col("rank").alias(PRIORITY)), max_contributions, period_bounds
        )
        kept = ranked.filter(pl.Series(mask))
    else:
        kept = ranked.filter(
            pl.col("rank").rank("ordinal").over("patient_key") <= max_contributions
        )
    hierarchy = practices.select("practice_code", *HIERARCHY_COLUMNS)
    return kept.join(hierarchy, on="practice_code").select(APPOINTMENTS_SCHEMA.names)


def same_rows(left: pl.DataFrame, right: pl.DataFrame) -> bool:
    """Whether two tables hold the same rows, as multisets (order ignored)."""
    if left.columns != right.columns or left.height != right.height:
        return False
    columns = left.columns
    return left.sort(columns).equals(right.select(columns).cast(left.schema).sort(columns))
