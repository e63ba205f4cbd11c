"""Synthetic raw extracts, as a practice's system supplier would export them, and opt-out lists.

From the same model as the synthetic dataset (population.py, appointments.py) and the same
seed: the same practices, the same patients and NHS numbers, appointments drawn from the
same tables. Unlike the dataset, an extract is what a supplier holds before governance:
it includes patients who opted out, heavy users beyond `max_contributions`, and the
identifying columns (NHS number, date of birth, full postcode) that ingest must remove.
Every NHS number comes from the reserved test range, so none can be a real patient's.

Differences from the generated dataset's rows, by design: the appointments are drawn
without the opt-out and without the per-patient cut (so the random streams, hence the rows,
differ from the dataset's), and the test range holds only 909,091 valid numbers, so patients
past the first reuse of the range (`cohort` > 0 in population.py) share a number with a
patient elsewhere; their keys after ingest are those of the bare number.

Files written (see extract_format.py for the columns)::

    <out>/<practice_code>.csv      one per practice (.csv.gz with --gzip; ingest reads both)
    <out>/national_opt_out.csv     NHS numbers on the national data opt-out
    <out>/type1_opt_out.csv        NHS numbers with a type-1 opt-out at their practice

A batch (`--first N --count M`: positions N to N+M-1 of the selection) writes exactly the
files a run over the whole selection writes for those practices, so a national load (about
58 GB of CSV, 13 GB gzipped) can be written, ingested and deleted a batch at a time. Each
file appears under its name only once complete (written as `<name>.partial`, then renamed).

Command line (also `dpgate-server synthetic extracts`, with the same options)::

    python -m dpgate_server.synthetic.raw_extracts --practices 150 --seed 2025 --out var/extracts
    python -m dpgate_server.synthetic.raw_extracts --practices all --first 0 --count 500 \\
        --gzip --no-opt-out-lists --out var/extracts
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from dpgate_server.governance import extract_format as fmt
from dpgate_server.synthetic.appointment_model import appointment_model
from dpgate_server.synthetic.appointments import PracticeAppointments, draw_appointments
from dpgate_server.synthetic.population import PracticeTable, draw_patients, select_practices
from dpgate_server.synthetic.progress import GenerationProgress, NoProgress, progress_bar
from dpgate_server.synthetic.workers import auto_workers, worker_pool
from dpgate_server.vocabulary.appointment_categories import (
    AGE_BANDS,
    HCP_TYPES,
    MODES,
    NATIONAL_CATEGORIES,
    SERVICE_SETTINGS,
    SEXES,
    STATUSES,
)
from dpgate_server.vocabulary.england_calendar import WINDOW_START, window_calendar

NATIONAL_OPT_OUT_FILE = "national_opt_out.csv"
TYPE1_OPT_OUT_FILE = "type1_opt_out.csv"
TYPE1_OPT_OUT_RATE = 0.03
"""Assumed share of patients with a type-1 opt-out (a modelling choice, not a statistic)."""
UNBOUNDED = 1_000_000
"""`max_contributions` passed to the model: a supplier's export is not cut per patient."""
OLDEST_AGE = 100
"""Upper end of the open "85+" band when drawing dates of birth."""
EXTRA_COLUMN = "appointment_id"
"""A supplier's own column that is not part of the declared extract: ingest drops it."""
GZIP_LEVEL = 1
"""Fastest gzip: about 4.4x smaller than the CSV (level 6: 5.7x) at under half the time;
these files are transient, written to be ingested and deleted."""
PARTIAL_SUFFIX = ".partial"

_RAW_STREAM = 11
_TYPE1_STREAM = 12
_POSTCODE_AREAS = ("AB", "BD", "CF", "DH", "EX", "GL", "HU", "LN", "NR", "PL", "SN", "TQ")
_INWARD_LETTERS = tuple("ABDEFGHJLNPQRSTUWXYZ")


@dataclass(frozen=True, slots=True)
class RawExtractFiles:
    """What `write_raw_extracts` wrote."""

    extracts: dict[str, Path]
    """Practice code -> its CSV extract."""
    national_opt_out: Path
    type1_opt_out: Path


def practice_extract(table: PracticeTable, position: int, seed: int) -> pl.DataFrame:
    """The raw extract of the practice at `position` of `table`, as a frame of strings."""
    index = int(table.index[position])
    patients = draw_patients(
        seed, index, int(table.list_size[position]), int(table.first_patient[position])
    )
    everyone = dataclasses.replace(patients, opted_out=np.zeros_like(patients.opted_out))
    drawn = draw_appointments(appointment_model(), seed, index, everyone, UNBOUNDED)
    rng = np.random.default_rng([seed, index, _RAW_STREAM])
    birth = _dates_of_birth(rng, patients.age_band)
    postcodes = _postcodes(rng, index, patients.sex.size)
    appointment, booked = _datetimes(rng, drawn)
    who = drawn.patient
    frame = pl.DataFrame(
        {
            EXTRA_COLUMN: np.arange(1, len(drawn) + 1, dtype=np.int64),
            fmt.PRACTICE_CODE: pl.repeat(
                table.practice_code[position], len(drawn), dtype=pl.String, eager=True
            ),
            fmt.NHS_NUMBER: patients.nhs_number[who],
            fmt.DATE_OF_BIRTH: birth[who],
            fmt.POSTCODE: postcodes.gather(who),
            fmt.SEX: _labels(SEXES, patients.sex[who]),
            fmt.APPOINTMENT_DATETIME: appointment.astype("datetime64[ms]"),
            fmt.BOOKED_DATETIME: booked.astype("datetime64[ms]"),
            fmt.DURATION_MINUTES: np.where(drawn.duration_minutes < 0, -1, drawn.duration_minutes),
            "mode": _labels(MODES, drawn.mode),
            "status": _labels(STATUSES, drawn.status),
            "hcp_type": _labels(HCP_TYPES, drawn.hcp_type),
            "national_category": _labels(NATIONAL_CATEGORIES, drawn.national_category),
            "service_setting": _labels(SERVICE_SETTINGS, drawn.service_setting),
        }
    )
    return frame.with_columns(
        pl.col(fmt.NHS_NUMBER).cast(pl.String).str.zfill(10),
        pl.when(pl.col(fmt.DURATION_MINUTES) >= 0).then(pl.col(fmt.DURATION_MINUTES)),
    ).select(EXTRA_COLUMN, *fmt.RAW_COLUMNS)


def write_extract(frame: pl.DataFrame, path: Path) -> None:
    """Write an extract frame as the CSV a supplier uploads."""
    frame.write_csv(
        path, datetime_format=fmt.DATETIME_FORMAT, date_format=fmt.DATE_FORMAT, null_value=""
    )


def extract_csv(frame: pl.DataFrame) -> bytes:
    """The CSV `write_extract` writes, in memory (to compress it)."""
    text = frame.write_csv(
        datetime_format=fmt.DATETIME_FORMAT, date_format=fmt.DATE_FORMAT, null_value=""
    )
    return text.encode()


def opt_out_numbers(table: PracticeTable, seed: int) -> tuple[list[str], list[str]]:
    """(national, type-1) opt-out NHS numbers of the patients of `table`, sorted, distinct.

    The national list is exactly the patients the generated dataset leaves out; the type-1
    list is drawn from its own stream.
    """
    national: set[int] = set()
    type1: set[int] = set()
    for position in range(len(table)):
        index = int(table.index[position])
        patients = draw_patients(
            seed, index, int(table.list_size[position]), int(table.first_patient[position])
        )
        national.update(patients.nhs_number[patients.opted_out].tolist())
        rng = np.random.default_rng([seed, index, _TYPE1_STREAM])
        chosen = rng.random(patients.sex.size) < TYPE1_OPT_OUT_RATE
        type1.update(patients.nhs_number[chosen].tolist())
    return [f"{n:010d}" for n in sorted(national)], [f"{n:010d}" for n in sorted(type1)]


def write_opt_out_list(numbers: Sequence[str], path: Path) -> None:
    """An opt-out list file: a header and one NHS number a line."""
    pl.DataFrame(
        {fmt.OPT_OUT_COLUMN: list(numbers)}, schema={fmt.OPT_OUT_COLUMN: pl.String}
    ).write_csv(path)


def write_raw_extracts(
    out: Path,
    practices: int | None,
    seed: int,
    only: Sequence[str] = (),
    *,
    first: int = 0,
    count: int | None = None,
    compress: bool = False,
    opt_out_lists: bool = True,
    workers: int | None = 1,
    progress: GenerationProgress | None = None,
) -> RawExtractFiles:
    """Write the extracts of the chosen practices, and both opt-out lists.

    Args:
        out: the folder (created if missing).
        practices: the selection, as the generator's (None: all of England's).
        seed: everything drawn depends on this alone (with the selection).
        only: practice codes of the selection to write (empty: every one in the range).
        first, count: the range of positions in the selection to write (count None: to the
            end; a range past the end stops at the end).
        compress: write `<code>.csv.gz` instead of `<code>.csv`.
        opt_out_lists: write the lists too; they cover every practice of the selection, as
            national lists would, whatever the range (so one batch need write them).
        workers: processes writing extracts in parallel (None: one per core, up to 4); the
            files do not depend on it.
        progress: told as each practice's file is written.
    """
    table = select_practices(practices)
    positions = batch_positions(table, only, first, count)
    out.mkdir(parents=True, exist_ok=True)
    progress = progress or NoProgress()
    extracts: dict[str, Path] = {}
    for code, path, rows in _write_extracts(practices, positions, seed, out, compress, workers):
        extracts[code] = path
        progress.practices_done(1, rows)
    files = RawExtractFiles(extracts, out / NATIONAL_OPT_OUT_FILE, out / TYPE1_OPT_OUT_FILE)
    if opt_out_lists:
        progress.stage("opt-out lists")
        national, type1 = opt_out_numbers(table, seed)
        write_opt_out_list(national, files.national_opt_out)
        write_opt_out_list(type1, files.type1_opt_out)
    return files


def batch_positions(
    table: PracticeTable, only: Sequence[str], first: int, count: int | None
) -> list[int]:
    """Positions in `table` of the practices in [first, first + count) and in `only`.

    Raises:
        ValueError: a code not in the selection, or a range starting outside it.
    """
    unknown = set(only) - set(table.practice_code)
    if unknown:
        raise ValueError(f"practices not in the selection: {', '.join(sorted(unknown))}")
    if not 0 <= first < len(table):
        raise ValueError(
            f"--first must be between 0 and {len(table) - 1} (the selection has"
            f" {len(table)} practices), got {first}"
        )
    if count is not None and count < 1:
        raise ValueError(f"--count must be at least 1, got {count}")
    stop = len(table) if count is None else min(len(table), first + count)
    wanted = set(only)
    return [p for p in range(first, stop) if not wanted or table.practice_code[p] in wanted]


def extract_name(code: str, compress: bool) -> str:
    """The file name of a practice's extract, as `dpgate-server ingest` reads it."""
    return f"{code}.csv.gz" if compress else f"{code}.csv"


def _write_extracts(
    practices: int | None,
    positions: list[int],
    seed: int,
    out: Path,
    compress: bool,
    workers: int | None,
) -> Iterator[tuple[str, Path, int]]:
    """(code, path, rows) of each practice written, in position order."""
    if workers is None:
        workers = auto_workers(len(positions))
    tasks = [(practices, p, seed, out, compress) for p in positions]
    if workers <= 1:
        yield from (write_practice_file(*task) for task in tasks)
        return
    with worker_pool(workers) as pool:
        yield from pool.map(write_practice_file, *zip(*tasks, strict=True), chunksize=1)


def write_practice_file(
    practices: int | None, position: int, seed: int, out: Path, compress: bool
) -> tuple[str, Path, int]:
    """Write one practice's extract (a worker's task: small arguments, nothing shared)."""
    table = _selection(practices)
    code = table.practice_code[position]
    path = out / extract_name(code, compress)
    frame = practice_extract(table, position, seed)
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    if compress:
        partial.write_bytes(gzip.compress(extract_csv(frame), GZIP_LEVEL, mtime=0))
    else:
        write_extract(frame, partial)
    os.replace(partial, path)
    return code, path, frame.height


@cache
def _selection(practices: int | None) -> PracticeTable:
    return select_practices(practices)


def _labels(labels: tuple[str, ...], codes: npt.NDArray[np.integer]) -> pl.Series:
    """The label of each code, gathered in Polars (a numpy object array of Python strings
    cost a third of an extract's time)."""
    return pl.Series(labels, dtype=pl.String).gather(codes.astype(np.int64))


def _age_limits() -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Lowest and highest whole age of each band ("85+" ends at OLDEST_AGE)."""
    low, high = [], []
    for label in AGE_BANDS:
        first, _, last = label.rstrip("+").partition("-")
        low.append(int(first))
        high.append(int(last) if last else OLDEST_AGE)
    return np.array(low), np.array(high)


def _dates_of_birth(
    rng: np.random.Generator, age_band: npt.NDArray[np.int8]
) -> npt.NDArray[np.datetime64]:
    """Dates of birth keeping each patient in their age band for the whole window.

    Age at the window's start is drawn in [low, high - 1] of the band and the window lasts
    less than a year, so the age at any appointment is in [low, high].
    """
    low, high = _age_limits()
    band = age_band.astype(np.int64)
    age = low[band] + np.floor(rng.random(band.size) * (high[band] - low[band])).astype(np.int64)
    year = (WINDOW_START.year - 1970 - age).astype("datetime64[Y]")
    anniversary = (year.astype("datetime64[M]") + (WINDOW_START.month - 1)).astype(
        "datetime64[D]"
    ) + (WINDOW_START.day - 1)
    births: npt.NDArray[np.datetime64] = anniversary - rng.integers(0, 365, band.size).astype(
        "timedelta64[D]"
    )
    return births


def _postcodes(rng: np.random.Generator, practice_index: int, size: int) -> pl.Series:
    """Full postcodes around the practice: one area, districts 1-29, random inward codes."""
    area = _POSTCODE_AREAS[practice_index % len(_POSTCODE_AREAS)]
    district = rng.integers(1, 30, size)
    sector = rng.integers(0, 10, size)
    letters = rng.integers(0, len(_INWARD_LETTERS), (size, 2))
    parts = pl.DataFrame(
        {
            "district": district,
            "sector": sector,
            "a": _labels(_INWARD_LETTERS, letters[:, 0]),
            "b": _labels(_INWARD_LETTERS, letters[:, 1]),
        }
    )
    return parts.select(
        pl.format(f"{area}{{}} {{}}{{}}{{}}", "district", "sector", "a", "b").alias("postcode")
    ).to_series()


def _datetimes(
    rng: np.random.Generator, drawn: PracticeAppointments
) -> tuple[npt.NDArray[np.datetime64], npt.NDArray[np.datetime64]]:
    """Appointment and booking times (minute precision); booking is NaT when unknown."""
    calendar = window_calendar()
    day = calendar.epoch_days()[drawn.day].astype("datetime64[D]")
    minute_of_day = drawn.hour.astype(np.int64) * 60 + rng.integers(0, 12, len(drawn)) * 5
    appointment = day.astype("datetime64[m]") + minute_of_day.astype("timedelta64[m]")
    lead = drawn.lead_time_days.astype(np.int64)
    same_day_minute = minute_of_day - np.floor(rng.random(len(drawn)) * (minute_of_day + 1))
    other_day_minute = rng.integers(7 * 60, 19 * 60, len(drawn))
    booked_minute = np.where(lead == 0, same_day_minute, other_day_minute).astype(np.int64)
    booked_day = (day - np.maximum(lead, 0).astype("timedelta64[D]")).astype("datetime64[m]")
    booked = booked_day + booked_minute.astype("timedelta64[m]")
    booked[lead < 0] = np.datetime64("NaT")
    return appointment, booked


def parse_practices(text: str) -> int | None:
    """--practices: a number, or "all" (None) for every practice in England."""
    return None if text == "all" else int(text)


def write_with_progress(
    out: Path,
    practices: int | None,
    seed: int,
    only: Sequence[str] = (),
    *,
    first: int = 0,
    count: int | None = None,
    compress: bool = False,
    opt_out_lists: bool = True,
    workers: int | None = None,
) -> str:
    """Write extracts showing a progress bar on stderr; return a line saying what was written
    (the commands' shared body)."""
    table = select_practices(practices)
    total = len(batch_positions(table, only, first, count))
    started = time.perf_counter()
    with progress_bar("extracts", total) as bar:
        files = write_raw_extracts(
            out,
            practices,
            seed,
            only,
            first=first,
            count=count,
            compress=compress,
            opt_out_lists=opt_out_lists,
            workers=workers,
            progress=bar,
        )
    lists = (
        f", opt-out lists {files.national_opt_out.name} and {files.type1_opt_out.name}"
        if opt_out_lists
        else ""
    )
    return (
        f"{len(files.extracts)} extract(s){lists} in {out} ({time.perf_counter() - started:.1f} s)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: write extracts and opt-out lists, print where."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--practices", type=parse_practices, default=150, help='N or "all"')
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="*", default=(), help="practice codes to write")
    parser.add_argument("--first", type=int, default=0, help="position of the batch's first")
    parser.add_argument("--count", type=int, default=None, help="practices in the batch")
    parser.add_argument("--gzip", action="store_true", help="write <code>.csv.gz")
    parser.add_argument(
        "--no-opt-out-lists", action="store_true", help="skip the lists (another batch wrote them)"
    )
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    args = parser.parse_args(argv)
    try:
        summary = write_with_progress(
            args.out,
            args.practices,
            args.seed,
            args.only,
            first=args.first,
            count=args.count,
            compress=args.gzip,
            opt_out_lists=not args.no_opt_out_lists,
            workers=args.workers,
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
