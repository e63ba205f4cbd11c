"""Writing generated appointment rows into one Parquet file per month, deterministically.

The generator draws rows as small integer codes (`AppointmentRows`); `MonthFiles` turns
them into the store's appointments schema (`dpgate_server.store.appointment_files`) with
the public labels of the practice table, the calendar and the published category sets.
Row groups are cut at fixed sizes, so the bytes of a file depend on its rows only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from dpgate_server.store.appointment_files import (
    APPOINTMENTS_SCHEMA,
    PHYSICAL_SCHEMA,
    ROW_GROUP_ROWS,
    WRITE_OPTIONS,
)
from dpgate_server.synthetic.population import PracticeTable
from dpgate_server.vocabulary.appointment_categories import (
    AGE_BANDS,
    DURATION_BANDS,
    HCP_TYPES,
    LEAD_TIME_BANDS,
    MODES,
    NATIONAL_CATEGORIES,
    SERVICE_SETTINGS,
    SEXES,
    STATUSES,
)
from dpgate_server.vocabulary.england_calendar import WEEKDAY_LABELS, window_calendar


@dataclass(frozen=True, slots=True)
class AppointmentRows:
    """A block of rows in practice order, as codes (see appointments.PracticeAppointments).

    `practice` indexes the run's PracticeTable; -1 in `duration_minutes` and
    `lead_time_days` means unknown.
    """

    practice: npt.NDArray[np.int32]
    patient_key: npt.NDArray[np.int64]
    day: npt.NDArray[np.int16]
    hour: npt.NDArray[np.int8]
    duration_minutes: npt.NDArray[np.int16]
    duration_band: npt.NDArray[np.int8]
    lead_time_days: npt.NDArray[np.int16]
    lead_time_band: npt.NDArray[np.int8]
    mode: npt.NDArray[np.int8]
    status: npt.NDArray[np.int8]
    hcp_type: npt.NDArray[np.int8]
    national_category: npt.NDArray[np.int8]
    service_setting: npt.NDArray[np.int8]
    age_band: npt.NDArray[np.int8]
    sex: npt.NDArray[np.int8]

    def __len__(self) -> int:
        return int(self.day.size)

    def take(self, rows: npt.NDArray[np.int64]) -> AppointmentRows:
        """The rows at positions `rows`, in that order."""
        return AppointmentRows(**{f: getattr(self, f)[rows] for f in self.__slots__})

    @staticmethod
    def concatenate(blocks: list[AppointmentRows]) -> AppointmentRows:
        """The blocks' rows one after another."""
        if len(blocks) == 1:
            return blocks[0]
        fields = AppointmentRows.__slots__
        return AppointmentRows(
            **{f: np.concatenate([getattr(b, f) for b in blocks]) for f in fields}
        )


class MonthFiles:
    """Twelve open Parquet writers, one per month; rows arrive in practice order.

    Rows are buffered per month and written in row groups of exactly ROW_GROUP_ROWS (the
    last one shorter). Every month's file exists once closed, even if it received no rows.
    """

    def __init__(self, paths: list[Path], practices: PracticeTable) -> None:
        calendar = window_calendar()
        if len(paths) != len(calendar.months):
            raise ValueError("one path per month of the window is needed")
        self._writers = [pq.ParquetWriter(p, PHYSICAL_SCHEMA, **WRITE_OPTIONS) for p in paths]
        self._pending: list[list[AppointmentRows]] = [[] for _ in paths]
        self._labels = _Labels.of(practices)
        self._month_of_day = calendar.month_index.astype(np.int64)

    def write(self, rows: AppointmentRows) -> None:
        """Append `rows` to the month files (stable: practice order is kept)."""
        month = self._month_of_day[rows.day]
        order = np.argsort(month, kind="stable")
        bounds = np.searchsorted(month[order], np.arange(len(self._writers) + 1))
        for m in range(len(self._writers)):
            if bounds[m + 1] > bounds[m]:
                self._pending[m].append(rows.take(order[bounds[m] : bounds[m + 1]]))
                self._flush(m, final=False)

    def _flush(self, month: int, *, final: bool) -> None:
        pending = self._pending[month]
        waiting = sum(len(p) for p in pending)
        if waiting == 0 or (waiting < ROW_GROUP_ROWS and not final):
            return
        rows = AppointmentRows.concatenate(pending)
        start = 0
        while len(rows) - start >= ROW_GROUP_ROWS or (final and start < len(rows)):
            stop = min(start + ROW_GROUP_ROWS, len(rows))
            group = rows.take(np.arange(start, stop))
            self._writers[month].write_table(self._labels.table(group), row_group_size=stop - start)
            start = stop
        self._pending[month] = [rows.take(np.arange(start, len(rows)))] if start < len(rows) else []

    def close(self) -> None:
        """Write what is buffered and close the files (also after an error: no half file
        is ever published, the caller discards the staging folder)."""
        for month, writer in enumerate(self._writers):
            self._flush(month, final=True)
            writer.close()

    def __enter__(self) -> MonthFiles:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class _Labels:
    """Dictionaries that turn codes into the schema's string columns."""

    hierarchy: tuple[tuple[pa.Array, npt.NDArray[np.int32]], ...]
    epoch_days: npt.NDArray[np.int32]
    calendar_codes: tuple[tuple[pa.Array, npt.NDArray[np.int32]], ...]
    categories: dict[str, pa.Array]

    @staticmethod
    def of(practices: PracticeTable) -> _Labels:
        calendar = window_calendar()
        hierarchy = tuple(
            _dictionary(values)
            for values in (
                practices.practice_code,
                practices.pcn_code,
                practices.sub_icb_code,
                practices.icb_code,
                practices.region_code,
            )
        )
        day_week = calendar.weeks
        day_month = tuple(calendar.months[i] for i in calendar.month_index)
        day_weekday = tuple(WEEKDAY_LABELS[i] for i in calendar.weekday)
        return _Labels(
            hierarchy=hierarchy,
            epoch_days=calendar.epoch_days(),
            calendar_codes=tuple(_dictionary(v) for v in (day_week, day_month, day_weekday)),
            categories={
                "duration_band": pa.array(DURATION_BANDS),
                "lead_time_band": pa.array(LEAD_TIME_BANDS),
                "mode": pa.array(MODES),
                "status": pa.array(STATUSES),
                "hcp_type": pa.array(HCP_TYPES),
                "national_category": pa.array(NATIONAL_CATEGORIES),
                "service_setting": pa.array(SERVICE_SETTINGS),
                "age_band": pa.array(AGE_BANDS),
                "sex": pa.array(SEXES),
            },
        )

    def table(self, rows: AppointmentRows) -> pa.Table:
        def coded(dictionary: pa.Array, codes: npt.NDArray[np.integer]) -> pa.Array:
            return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), dictionary)

        def nullable(values: npt.NDArray[np.int16]) -> pa.Array:
            return pa.array(values.astype(np.int64), mask=values < 0)

        practice_cols = [coded(d, inverse[rows.practice]) for d, inverse in self.hierarchy]
        calendar_cols = [coded(d, inverse[rows.day]) for d, inverse in self.calendar_codes]
        category = {name: coded(d, getattr(rows, name)) for name, d in self.categories.items()}
        date = pa.array(self.epoch_days[rows.day], type=pa.int32()).view(pa.date32())
        columns = [
            pa.array(rows.patient_key),
            *practice_cols,
            date,
            *calendar_cols,
            pa.array(rows.hour.astype(np.int32)),
            nullable(rows.duration_minutes),
            category["duration_band"],
            nullable(rows.lead_time_days),
            category["lead_time_band"],
            category["mode"],
            category["status"],
            category["hcp_type"],
            category["national_category"],
            category["service_setting"],
            category["age_band"],
            category["sex"],
        ]
        return pa.Table.from_arrays(columns, names=APPOINTMENTS_SCHEMA.names)


def _dictionary(values: tuple[str, ...]) -> tuple[pa.Array, npt.NDArray[np.int32]]:
    """Distinct labels (first-seen order) and each position's index into them."""
    distinct = list(dict.fromkeys(values))
    index = {label: i for i, label in enumerate(distinct)}
    return pa.array(distinct, type=pa.string()), np.array(
        [index[v] for v in values], dtype=np.int32
    )
