"""Appointment rows as numpy arrays: integers as they are, strings as codes into label lists.

Publishing moves hundreds of millions of rows through hashing, cutting, sorting and
writing. Strings are few distinct values (categories, practice codes), so each string
column is held as int32 codes into a label list shared by the whole publish (`Labels`):
gathering, sorting and comparing rows are then plain numpy operations, and each distinct
string is hashed or looked up once. `to_arrow` turns rows back into the Parquet writer's
dictionary arrays, each dictionary holding exactly the labels used, sorted, so the bytes
written depend on the rows alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from dpgate_server.store.bounding import NULL_VALUE, LabelCodes, combine_rank_values

IntArray = npt.NDArray[np.int64]


class Labels:
    """Each string column's labels, numbered in the order first seen."""

    def __init__(self) -> None:
        self._labels: dict[str, list[str | None]] = {}
        self._codes: dict[str, dict[str | None, int]] = {}

    def codes_of(self, column: str, labels: Sequence[str | None]) -> npt.NDArray[np.int32]:
        """The code of each label (new labels get the next codes)."""
        known = self._codes.setdefault(column, {})
        listed = self._labels.setdefault(column, [])
        out = np.empty(len(labels), dtype=np.int32)
        for i, label in enumerate(labels):
            code = known.get(label)
            if code is None:
                code = known[label] = len(listed)
                listed.append(label)
            out[i] = code
        return out

    def labels(self, column: str) -> list[str | None]:
        return self._labels.get(column, [])


@dataclass(frozen=True, slots=True)
class CodedRows:
    """A block of rows: `values` by column (int64, or int32 codes for strings), `nulls` the
    missing integers of nullable columns (True = missing)."""

    values: dict[str, IntArray | npt.NDArray[np.int32]]
    nulls: dict[str, npt.NDArray[np.bool_]]
    strings: frozenset[str]
    """Which columns hold codes into `Labels`."""

    @property
    def num_rows(self) -> int:
        return int(next(iter(self.values.values())).size) if self.values else 0

    def column(self, name: str) -> npt.NDArray[Any]:
        """A column's values: int64 integers, or int32 codes for strings."""
        return self.values[name]

    def take(self, rows: npt.NDArray[np.int64]) -> CodedRows:
        """The rows at positions `rows`, in that order."""
        return CodedRows(
            {name: array[rows] for name, array in self.values.items()},
            {name: mask[rows] for name, mask in self.nulls.items()},
            self.strings,
        )

    def slice(self, start: int, stop: int) -> CodedRows:
        """Rows `start` to `stop` (copied, so the block they came from can be freed)."""
        return CodedRows(
            {name: array[start:stop].copy() for name, array in self.values.items()},
            {name: mask[start:stop].copy() for name, mask in self.nulls.items()},
            self.strings,
        )

    def with_columns(
        self, values: dict[str, npt.NDArray[np.int32]], order: Sequence[str]
    ) -> CodedRows:
        """These rows with string `values` added, columns in `order`."""
        merged = {**self.values, **values}
        return CodedRows(
            {name: merged[name] for name in order}, self.nulls, self.strings | set(values)
        )

    @staticmethod
    def concatenate(blocks: Sequence[CodedRows]) -> CodedRows:
        if len(blocks) == 1:
            return blocks[0]
        first = blocks[0]
        nulls = {}
        for name in {n for b in blocks for n in b.nulls}:
            parts = [b.nulls.get(name, np.zeros(b.num_rows, dtype=np.bool_)) for b in blocks]
            nulls[name] = np.concatenate(parts)
        return CodedRows(
            {name: np.concatenate([b.values[name] for b in blocks]) for name in first.values},
            nulls,
            first.strings,
        )

    @staticmethod
    def from_arrow(table: pa.Table, labels: Labels) -> CodedRows:
        """Rows of an Arrow table (strings plain or dictionary-encoded; dates as days)."""
        values: dict[str, IntArray | npt.NDArray[np.int32]] = {}
        nulls: dict[str, npt.NDArray[np.bool_]] = {}
        strings = set()
        for field in table.schema:
            column = table.column(field.name)
            if _is_string(field.type):
                values[field.name] = _string_codes(field.name, column, labels)
                strings.add(field.name)
                continue
            array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
            if pa.types.is_date32(array.type):
                array = array.view(pa.int32())
            if array.null_count:
                nulls[field.name] = np.asarray(array.is_null().to_numpy(zero_copy_only=False))
                array = array.fill_null(0)
            values[field.name] = np.asarray(array.to_numpy(), dtype=np.int64)
        return CodedRows(values, nulls, frozenset(strings))

    def rank_values(
        self, names: Iterable[str], labels: Labels, codes: LabelCodes
    ) -> npt.NDArray[np.uint64]:
        """bounding.row_rank_hashes of these rows over the columns `names`, in order."""
        columns = []
        for name in names:
            array = self.values[name]
            if name in self.strings:
                table = codes.of(labels.labels(name))
                columns.append(table[array] if table.size else np.zeros(array.size, np.uint64))
                continue
            value = array.astype(np.int64, copy=False).view(np.uint64)
            mask = self.nulls.get(name)
            columns.append(value if mask is None else np.where(mask, NULL_VALUE, value))
        return combine_rank_values(columns, self.num_rows, codes.seed)

    def to_arrow(self, labels: Labels, schema: pa.Schema) -> pa.Table:
        """An Arrow table with `schema` (strings: dictionaries of the used labels, sorted)."""
        arrays = []
        for field in schema:
            array = self.values[field.name]
            if field.name in self.strings:
                arrays.append(_dictionary(array.astype(np.int32), labels.labels(field.name)))
                continue
            mask = self.nulls.get(field.name)
            if pa.types.is_date32(field.type):
                arrays.append(pa.array(array.astype(np.int32), mask=mask).view(pa.date32()))
            else:
                arrays.append(pa.array(array, mask=mask).cast(field.type))
        return pa.Table.from_arrays(arrays, schema=schema)


def _is_string(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return True
    return bool(
        pa.types.is_string(kind) or pa.types.is_large_string(kind) or kind == pa.string_view()
    )


def _string_codes(name: str, column: pa.ChunkedArray, labels: Labels) -> npt.NDArray[np.int32]:
    parts = []
    for piece in column.chunks:
        chunk = piece if pa.types.is_dictionary(piece.type) else piece.dictionary_encode()
        mapping = labels.codes_of(name, chunk.dictionary.to_pylist())
        indices = chunk.indices
        if indices.null_count:
            missing = labels.codes_of(name, [None])[0]
            index = np.asarray(indices.fill_null(0).to_numpy(), dtype=np.int64)
            codes = mapping[index] if mapping.size else np.zeros(index.size, np.int32)
            codes[np.asarray(indices.is_null().to_numpy(zero_copy_only=False))] = missing
        else:
            index = np.asarray(indices.to_numpy(), dtype=np.int64)
            codes = mapping[index] if mapping.size else np.zeros(index.size, np.int32)
        parts.append(codes.astype(np.int32, copy=False))
    if not parts:
        return np.empty(0, dtype=np.int32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _dictionary(codes: npt.NDArray[np.int32], labels: list[str | None]) -> pa.Array:
    """Dictionary array of `codes` whose dictionary is the used labels, sorted."""
    used = np.flatnonzero(np.bincount(codes, minlength=len(labels)))
    names = [labels[i] for i in used.tolist()]
    present = [i for i, name in zip(used.tolist(), names, strict=True) if name is not None]
    present.sort(key=lambda i: labels[i])  # type: ignore[arg-type, return-value]
    position = np.full(max(len(labels), 1), -1, dtype=np.int32)
    position[present] = np.arange(len(present), dtype=np.int32)
    index = position[codes] if codes.size else np.zeros(0, dtype=np.int32)
    missing = index < 0
    dictionary = pa.array([labels[i] for i in present], pa.string())
    return pa.DictionaryArray.from_arrays(
        pa.array(np.where(missing, 0, index), pa.int32(), mask=missing if missing.any() else None),
        dictionary,
    )
