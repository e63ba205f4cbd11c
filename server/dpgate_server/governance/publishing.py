"""Building the next dataset version from the staged practices (DESIGN.md "Dataset versions").

Which practices a version covers is public policy, never a consequence of which uploads
arrived: it is the dataset's declared practice table minus the practices whose consent is
withdrawn. Those practices are the version's public keys (its `practices` table and the
practice, PCN, sub-ICB, ICB and region value sets of its metadata), whether or not they
have rows, so the key set reveals nothing about the data. A withdrawn practice disappears
from both the rows and the keys; the other public tables are copied unchanged.

Rows of an included practice come from its staged extract if it has one, else they are
carried forward from the current version (the practice's last published rows), so one
practice's upload never empties the others. Then, over the whole version:

1. rows of patients on an opt-out list are removed (again: a list may have changed since
   the rows were staged or published);
2. each patient is cut to `max_contributions` random rows (bounding.bound_lazyframe: a
   patient registered at two practices is cut across both);
3. the practice hierarchy is joined from the public practice table;
4. month files are written sorted by practice, the bound is *verified* over every file,
   and DatasetStore.publish swaps the current pointer in one atomic step. Queries in flight
   keep reading the version they opened; a crash at any point leaves the previous version
   current.

The manifest's `source` deliberately holds no row counts: the engine shows provenance
counts to analysts, and exact counts of the private table are not DP releases.
"""

from __future__ import annotations

import dataclasses
import secrets
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from dpgate_server.governance.ingest import STAGED_COLUMNS
from dpgate_server.governance.staging import StagingArea
from dpgate_server.store.appointment_files import APPOINTMENTS_SCHEMA, write_table
from dpgate_server.store.bounding import bound_lazyframe, verify_bound
from dpgate_server.store.metadata import DatasetMetadata
from dpgate_server.store.store import DatasetStore, DatasetVersion, VersionBuilder

PUBLISHER = "dpgate governance"
PRACTICES_TABLE = "practices"
HIERARCHY_COLUMNS: tuple[str, ...] = ("pcn_code", "sub_icb_code", "icb_code", "region_code")
"""Columns of the practice table copied into every row (groupable public keys)."""
LINEAGE_KEYS: tuple[str, ...] = ("generator", "model_version", "seed", "practices")
"""Source fields carried over from the base version, so the demo's start-up check
(generator.ensure_demo_dataset) recognises a version derived from the demo and does not
generate a fresh one over the published practices' data."""
_MAX_ROWS_CEILING = 4_294_967_295
_WRITER_THREADS = 4


@dataclass(frozen=True, slots=True)
class PublishInputs:
    """Everything a new version is built from.

    Attributes:
        base: the current version (metadata, public tables, rows carried forward).
        declared_practices: the dataset's declared practice table (public policy).
        withdrawn: practices whose consent is withdrawn.
        staging: the staged practices' rows.
        opted_out: opted-out patient keys (column patient_key).
        key_id: fingerprint of the pseudonymisation key of every row.
    """

    base: DatasetVersion
    declared_practices: pl.DataFrame
    withdrawn: frozenset[str]
    staging: StagingArea
    opted_out: pl.DataFrame
    key_id: str


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The new version and what went into it (counts are for the operator, never analysts)."""

    version: DatasetVersion
    practices: int
    staged_practices: tuple[str, ...]
    carried_forward: int
    withdrawn_practices: tuple[str, ...]
    rows: int
    rows_opted_out: int
    rows_cut_by_bound: int


def publish_version(store: DatasetStore, inputs: PublishInputs) -> PublishResult:
    """Build, verify and publish the next version; see the module docstring for the steps."""
    base = inputs.base
    included = inputs.declared_practices.filter(
        ~pl.col("practice_code").is_in(sorted(inputs.withdrawn))
    )
    codes = included.get_column("practice_code").to_list()
    staged = tuple(c for c in inputs.staging.practices() if c in set(codes))
    carried = sorted(set(codes) - set(staged))
    metadata = metadata_for(base.metadata, included)
    builder = store.begin_version(metadata)
    try:
        rows = _rows(inputs, staged, carried)
        before_opt_out = rows.height
        rows = rows.join(inputs.opted_out, on="patient_key", how="anti")
        after_opt_out = rows.height
        k = metadata.max_contributions
        # bound_lazyframe applies one seeded permutation per group size; shuffling the rows
        # first makes each patient's kept rows an independent random choice.
        shuffled = rows.sample(fraction=1.0, shuffle=True, seed=secrets.randbits(32))
        bounded = bound_lazyframe(shuffled.lazy(), k, secrets.randbits(32)).collect()
        del shuffled
        del rows
        paths = _write_months(builder, bounded, included, metadata)
        _write_public_tables(builder, base, included)
        bound = verify_bound(paths, k)
        version = store.publish(builder, bound, _source(inputs, staged, carried, codes))
    except BaseException:
        builder.discard()
        raise
    return PublishResult(
        version=version,
        practices=len(codes),
        staged_practices=staged,
        carried_forward=len(carried),
        withdrawn_practices=tuple(sorted(inputs.withdrawn & set(_declared_codes(inputs)))),
        rows=bounded.height,
        rows_opted_out=before_opt_out - after_opt_out,
        rows_cut_by_bound=after_opt_out - bounded.height,
    )


def metadata_for(base: DatasetMetadata, practices: pl.DataFrame) -> DatasetMetadata:
    """`base` with its practice-hierarchy value sets (and row ceiling) from `practices`.

    Values keep the table's order (hierarchy order), as the generator's metadata does.
    """
    columns = []
    for spec in base.columns:
        if spec.key_table == PRACTICES_TABLE and spec.name in practices.columns:
            values = tuple(dict.fromkeys(practices.get_column(spec.name).to_list()))
            columns.append(dataclasses.replace(spec, values=values))
        else:
            columns.append(spec)
    max_rows = base.max_rows
    if "list_size" in practices.columns:
        registered = int(practices.get_column("list_size").sum())
        max_rows = max(1, min(base.max_contributions * registered, _MAX_ROWS_CEILING))
    return dataclasses.replace(base, columns=tuple(columns), max_rows=max_rows)


def _declared_codes(inputs: PublishInputs) -> list[str]:
    return inputs.declared_practices.get_column("practice_code").to_list()


def _rows(inputs: PublishInputs, staged: Sequence[str], carried: Sequence[str]) -> pl.DataFrame:
    """Staged rows of `staged` practices and the base version's rows of `carried` ones."""
    names = list(STAGED_COLUMNS)
    parts = [inputs.staging.scan(code).select(names) for code in staged]
    if carried:
        previous = inputs.base.scan_appointments().filter(pl.col("practice_code").is_in(carried))
        parts.append(previous.select(names))
    if not parts:
        return pl.DataFrame(schema=STAGED_COLUMNS)
    return pl.concat([p.cast(STAGED_COLUMNS) for p in parts]).collect()  # type: ignore[arg-type]


def _write_months(
    builder: VersionBuilder,
    rows: pl.DataFrame,
    practices: pl.DataFrame,
    metadata: DatasetMetadata,
) -> list[Path]:
    """One file per month of the dataset (empty months too), rows sorted by practice.

    The files are written by a few threads: Parquet encoding releases the GIL.
    """
    spec = metadata.column("month")
    months = [str(m) for m in (spec.values or ())] if spec is not None else []
    hierarchy = practices.select("practice_code", *HIERARCHY_COLUMNS)
    joined = (
        rows.join(hierarchy, on="practice_code", how="inner")
        .select(APPOINTMENTS_SCHEMA.names)
        .sort("month", "practice_code", "appointment_date", "hour", "patient_key")
    )
    parts = joined.partition_by("month", as_dict=True, maintain_order=True)
    empty = joined.clear()
    paths = [builder.appointments_path(month) for month in months]

    def write(month: str, path: Path) -> None:
        part = parts.get((month,), empty)
        write_table(part.to_arrow().cast(APPOINTMENTS_SCHEMA), path)

    with ThreadPoolExecutor(max_workers=_WRITER_THREADS) as pool:
        list(pool.map(write, months, paths))
    return paths


def _write_public_tables(
    builder: VersionBuilder, base: DatasetVersion, practices: pl.DataFrame
) -> None:
    for name in base.metadata.public_tables:
        target = builder.public_table_path(name)
        if name == PRACTICES_TABLE:
            write_table(_as_plain_strings(practices.to_arrow()), target)
        else:
            shutil.copyfile(base.public_table_path(name), target)


def _as_plain_strings(table: pa.Table) -> pa.Table:
    schema = pa.schema(
        [
            pa.field(f.name, pa.string()) if pa.types.is_large_string(f.type) else f
            for f in table.schema
        ]
    )
    return table.cast(schema)


def _source(
    inputs: PublishInputs, staged: Sequence[str], carried: Sequence[str], codes: Sequence[str]
) -> dict[str, Any]:
    lineage = {
        k: inputs.base.manifest.source[k] for k in LINEAGE_KEYS if k in inputs.base.manifest.source
    }
    return {
        **lineage,
        "publisher": PUBLISHER,
        "based_on": inputs.base.version,
        "key_id": inputs.key_id,
        "practice_count": len(codes),
        "staged_practices": list(staged),
        "carried_forward_practices": len(carried),
        "withdrawn_practices": sorted(inputs.withdrawn & set(_declared_codes(inputs))),
    }
