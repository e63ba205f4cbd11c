"""Generate the synthetic "gp_appointments" dataset into the dataset store.

Orchestration only: choose whole practices, draw each practice's patients and appointments
(in chunks of practices, so memory stays bounded at national scale), pseudonymise, write
the month files and public tables, verify the contribution bound over every file, publish.
The same seed and scale always give byte-identical Parquet files.

Command line::

    python -m dpgate_server.synthetic.generator --practices 150 --seed 7 \\
        --store var/datasets --key-file var/secrets/pseudonym.key
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from dpgate_server.store.appointment_files import write_table
from dpgate_server.store.bounding import RANDOM_PERIOD_BOUND_METHOD, verify_bound
from dpgate_server.store.metadata import DatasetMetadata
from dpgate_server.store.period_bounding import PRIORITY, period_keep_mask
from dpgate_server.store.period_bounds import PeriodBounds
from dpgate_server.store.pseudonym import key_id, load_or_create_key, patient_keys
from dpgate_server.store.store import DatasetStore, DatasetVersion
from dpgate_server.synthetic.appointment_model import appointment_model
from dpgate_server.synthetic.appointments import draw_appointments
from dpgate_server.synthetic.gp_metadata import (
    CATEGORY_SETS,
    DATASET_ID,
    DEMO_PERIOD_BOUNDS,
    MAX_CONTRIBUTIONS,
    ZCDP_DATASET_ID,
    gp_appointments_metadata,
    gp_appointments_zcdp_metadata,
)
from dpgate_server.synthetic.month_files import AppointmentRows, MonthFiles
from dpgate_server.synthetic.population import PracticeTable, draw_patients, select_practices
from dpgate_server.synthetic.progress import GenerationProgress, NoProgress, progress_bar
from dpgate_server.synthetic.workers import auto_workers, worker_pool
from dpgate_server.vocabulary.england_calendar import window_calendar
from dpgate_server.vocabulary.errors import DatasetNotFoundError

GENERATOR_NAME = "dpgate synthetic England GP appointments"
MODEL_VERSION = 1
"""Bumped whenever the model changes what a seed produces (so old versions are not reused)."""
_DEMO_PERIODS = {ZCDP_DATASET_ID: DEMO_PERIOD_BOUNDS}
"""The per-period bounds each generated dataset is cut to (none: the total alone)."""
_PERIOD_STREAM = 0x5EED_9E41
"""Random stream of the zCDP twin's per-period cut (apart from every draw of the rows)."""
CHUNK_PATIENTS = 400_000
"""Registered patients per chunk of practices (~2.2 M rows, a few hundred MB in flight)."""


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """One chunk's rows and the counts the manifest records."""

    rows: AppointmentRows
    practices: int
    registered_patients: int
    opted_out_patients: int
    rows_before_bound: int


def generate_dataset(
    store: DatasetStore,
    key: bytes,
    practices: int | None,
    seed: int,
    *,
    workers: int | None = None,
    progress: GenerationProgress | None = None,
    dataset_id: str = DATASET_ID,
) -> DatasetVersion:
    """Generate, verify and publish a new current version of "gp_appointments" (or of its
    zCDP twin "gp_appointments_zcdp": the same rows, each patient's then cut to the demo's
    per-period bounds in a random order of their own, verified and recorded with them).

    Args:
        store: where the version is published.
        key: the server's pseudonymisation key (see pseudonym.load_or_create_key).
        practices: how many whole practices (a contiguous block of the hierarchy); None
            for all of England's.
        seed: everything drawn depends on this alone (with the scale).
        workers: processes drawing chunks in parallel (None: one per core, up to 4); the
            files do not depend on it.
        progress: told as each chunk of practices is written, then of verifying.
    """
    progress = progress or NoProgress()
    table = select_practices(practices)
    metadata = _metadata_of(dataset_id, table)
    periods = metadata.period_bounds or None
    builder = store.begin_version(metadata)
    try:
        months = window_calendar().months
        paths = [builder.appointments_path(m) for m in months]
        totals = np.zeros(3, dtype=np.int64)
        with MonthFiles(paths, table) as files:
            for chunk in _draw_chunks(table, key, seed, workers, periods):
                files.write(chunk.rows)
                progress.practices_done(chunk.practices, len(chunk.rows.day))
                totals += (
                    chunk.registered_patients,
                    chunk.opted_out_patients,
                    chunk.rows_before_bound,
                )
        progress.stage("verifying")
        _write_public_tables(builder.public_table_path, table)
        bound = (
            verify_bound(
                paths,
                MAX_CONTRIBUTIONS,
                method=RANDOM_PERIOD_BOUND_METHOD,
                seed=seed,
                period_bounds=periods,
            )
            if periods
            else verify_bound(paths, MAX_CONTRIBUTIONS)
        )
        rows = int(pl.scan_parquet([str(p) for p in paths]).select(pl.len()).collect().item())
        source = {
            "generator": GENERATOR_NAME,
            "model_version": MODEL_VERSION,
            "seed": seed,
            "practices": practices,
            "practice_count": len(table),
            "key_id": key_id(key),
            "registered_patients": int(totals[0]),
            "opted_out_patients": int(totals[1]),
            "rows_before_bound": int(totals[2]),
            "rows": rows,
        }
        return store.publish(builder, bound, source)
    except BaseException:
        builder.discard()
        raise


def _metadata_of(dataset_id: str, table: PracticeTable) -> DatasetMetadata:
    if dataset_id == DATASET_ID:
        return gp_appointments_metadata(table)
    if dataset_id == ZCDP_DATASET_ID:
        return gp_appointments_zcdp_metadata(table)
    raise ValueError(f"the generator makes {DATASET_ID} or {ZCDP_DATASET_ID}, not {dataset_id}")


def ensure_demo_dataset(
    store_root: Path,
    key_file: Path,
    practices: int,
    seed: int,
    *,
    dataset_id: str = DATASET_ID,
) -> DatasetVersion:
    """The current "gp_appointments" (or zCDP twin) version for this seed, scale and key,
    generated once.

    Reuses the current version when its manifest records the same generator, model
    version, seed, scale and key fingerprint with a verified bound; otherwise generates and
    publishes a new one. A lock file serialises concurrent callers (e.g. test workers).
    """
    _refuse_key_inside_store(key_file, store_root)
    key = load_or_create_key(key_file)
    store = DatasetStore(store_root)
    with store.writer_lock(dataset_id):
        try:
            current = store.current(dataset_id)
        except DatasetNotFoundError:
            current = None
        if current is not None and _is_version_of(current, key, practices, seed):
            return current
        return generate_dataset(store, key, practices, seed, dataset_id=dataset_id)


def _is_version_of(version: DatasetVersion, key: bytes, practices: int | None, seed: int) -> bool:
    source = version.manifest.source
    bound = version.manifest.bound
    return (
        source.get("generator") == GENERATOR_NAME
        and source.get("model_version") == MODEL_VERSION
        and source.get("seed") == seed
        and source.get("practices") == practices
        and source.get("key_id") == key_id(key)
        and bound is not None
        and bound.verified
        and bound.max_contributions == MAX_CONTRIBUTIONS
        and bound.period_bounds == _DEMO_PERIODS.get(version.dataset_id, PeriodBounds())
    )


def _refuse_key_inside_store(key_file: Path, store_root: Path) -> None:
    """The key must live outside the data folder: whoever copies the data must not get it."""
    if key_file.resolve().is_relative_to(store_root.resolve()):
        raise ValueError(f"the key file {key_file} must be outside the data folder {store_root}")


def _chunks(table: PracticeTable) -> list[tuple[int, int]]:
    """[start, stop) ranges of practices holding about CHUNK_PATIENTS patients each."""
    ranges: list[tuple[int, int]] = []
    start, patients = 0, 0
    for position, size in enumerate(table.list_size.tolist()):
        patients += size
        if patients >= CHUNK_PATIENTS:
            ranges.append((start, position + 1))
            start, patients = position + 1, 0
    if start < len(table):
        ranges.append((start, len(table)))
    return ranges


def _draw_chunks(
    table: PracticeTable,
    key: bytes,
    seed: int,
    workers: int | None,
    periods: PeriodBounds | None = None,
) -> Iterator[ChunkResult]:
    """Chunks in practice order; with workers > 1, at most workers + 1 are in flight."""
    ranges = _chunks(table)
    if workers is None:
        workers = auto_workers(len(ranges))
    if workers <= 1:
        for start, stop in ranges:
            yield draw_chunk(table, key, seed, start, stop, periods)
        return
    with worker_pool(workers) as pool:
        pending: deque[Future[ChunkResult]] = deque()
        for start, stop in ranges:
            pending.append(pool.submit(draw_chunk, table, key, seed, start, stop, periods))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def draw_chunk(
    table: PracticeTable,
    key: bytes,
    seed: int,
    start: int,
    stop: int,
    periods: PeriodBounds | None = None,
) -> ChunkResult:
    """Patients and appointments of practices [start, stop), pseudonymised (and, with
    `periods`, each patient's rows cut to them: a patient's rows are all at one practice)."""
    model = appointment_model()
    parts: list[dict[str, Any]] = []
    registered = opted_out = before = 0
    for position in range(start, stop):
        index = int(table.index[position])
        patients = draw_patients(
            seed, index, int(table.list_size[position]), int(table.first_patient[position])
        )
        drawn = draw_appointments(model, seed, index, patients, MAX_CONTRIBUTIONS)
        with_rows = np.unique(drawn.patient)
        keys = patient_keys(key, patients.identities(with_rows))
        part: dict[str, Any] = {
            "practice": np.full(len(drawn), position, dtype=np.int32),
            "patient_key": keys[np.searchsorted(with_rows, drawn.patient)],
            "day": drawn.day,
            "hour": drawn.hour,
            "duration_minutes": drawn.duration_minutes,
            "duration_band": drawn.duration_band,
            "lead_time_days": drawn.lead_time_days,
            "lead_time_band": drawn.lead_time_band,
            "mode": drawn.mode,
            "status": drawn.status,
            "hcp_type": drawn.hcp_type,
            "national_category": drawn.national_category,
            "service_setting": drawn.service_setting,
            "age_band": patients.age_band[drawn.patient],
            "sex": patients.sex[drawn.patient],
        }
        if periods:
            keep = _period_cut(part, periods, seed, index)
            part = {name: values[keep] for name, values in part.items()}
        parts.append(part)
        registered += patients.sex.size
        opted_out += int(patients.opted_out.sum())
        before += drawn.rows_before_bound
    columns = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    return ChunkResult(
        rows=AppointmentRows(**columns),
        practices=stop - start,
        registered_patients=registered,
        opted_out_patients=opted_out,
        rows_before_bound=before,
    )


def _period_cut(
    part: dict[str, Any], periods: PeriodBounds, seed: int, index: int
) -> npt.NDArray[np.bool_]:
    """Which rows of one practice's `part` each patient keeps under `periods` (and K), in
    a random order drawn from the practice's own stream."""
    calendar = window_calendar()
    week_codes = {label: i for i, label in enumerate(calendar.week_labels())}
    week_of_day = np.array([week_codes[w] for w in calendar.weeks], dtype=np.int32)
    day = part["day"].astype(np.int64)
    rng = np.random.default_rng([seed, index, _PERIOD_STREAM])
    frame = pl.DataFrame(
        {
            "patient_key": part["patient_key"],
            PRIORITY: rng.integers(0, 2**63, day.size, dtype=np.int64).astype(np.uint64),
            "practice_code": part["practice"],
            "week": week_of_day[day],
            "month": calendar.month_index[day].astype(np.int32),
        }
    )
    return period_keep_mask(frame, MAX_CONTRIBUTIONS, periods)


def _write_public_tables(path_of: Any, table: PracticeTable) -> None:
    write_table(table.public_table().to_arrow(), path_of("practices"))
    write_table(window_calendar().public_table().to_arrow(), path_of("calendar"))
    categories = pl.DataFrame(
        [
            {"column_name": name, "value": label, "position": position}
            for name, labels in CATEGORY_SETS
            for position, label in enumerate(labels)
        ],
        schema={"column_name": pl.String, "value": pl.String, "position": pl.Int32},
    )
    write_table(categories.to_arrow(), path_of("categories"))


def _parse_practices(text: str) -> int | None:
    return None if text == "all" else int(text)


def generate_with_progress(
    store_root: Path,
    key_file: Path,
    practices: int | None,
    seed: int,
    workers: int | None,
    *,
    reuse: bool = False,
) -> str:
    """Generate and publish a version under the store's writer lock, showing a progress bar
    on stderr; return a line saying what was written (the commands' shared body).

    With `reuse`, a current version of this generator, seed, scale and key is kept instead
    (as the demo's start does), so a benchmark can ask for the national dataset each run.
    """
    _refuse_key_inside_store(key_file, store_root)
    key = load_or_create_key(key_file)
    store = DatasetStore(store_root)
    started = time.perf_counter()
    with store.writer_lock(DATASET_ID):
        try:
            current: DatasetVersion | None = store.current(DATASET_ID)
        except DatasetNotFoundError:
            current = None
        if reuse and current is not None and _is_version_of(current, key, practices, seed):
            return f"{current.dataset_id} {current.version} is current (reused) -> {current.path}"
        with progress_bar("generating", len(select_practices(practices))) as bar:
            version = generate_dataset(store, key, practices, seed, workers=workers, progress=bar)
    elapsed = time.perf_counter() - started
    source = version.manifest.source
    return (
        f"{version.dataset_id} {version.version}: {source['rows']:,} rows, "
        f"{source['practice_count']:,} practices, {elapsed:.1f} s -> {version.path}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: generate a version and print what was written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--practices", type=_parse_practices, default=150, help='N or "all"')
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--store", type=Path, required=True, help="dataset store folder")
    parser.add_argument("--key-file", type=Path, required=True, help="outside the store")
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--reuse", action="store_true", help="keep a current version of these")
    args = parser.parse_args(argv)
    print(
        generate_with_progress(
            args.store, args.key_file, args.practices, args.seed, args.workers, reuse=args.reuse
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
