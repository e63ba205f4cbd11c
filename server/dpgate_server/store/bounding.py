"""Publish-time contribution bounding: at most `max_contributions` rows per patient.

A version whose every patient has at most k rows can be queried with OpenDP's row-level
unit (`contributions=k`) and no per-query truncation (OPENDP_POLARS.md section 12). OpenDP
cannot tell whether a file was bounded, so the bound is only *declared* in a version's
manifest after `verify_bound` has counted the rows of every patient across all of the
version's files; a file with one patient over k fails and is never marked verified.

Which rows a patient keeps is decided by a keyed-hash rank (`row_rank_hashes`): every row
gets a 64-bit hash of its values under the version's seed, and a patient over the bound
keeps the k rows of lowest hash. The seed is recorded in the manifest, so a publish is
reproducible; the hash does not favour any month or practice, so the kept rows are a
uniform choice (never "first rows"); and a patient's choice depends only on that patient's
own rows, so one patient changes the bounded table by at most k rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa

from dpgate_server.store.period_bounding import bound_maxima, violations
from dpgate_server.store.period_bounds import PeriodBounds
from dpgate_server.store.store import ContributionBound

BOUND_METHOD = "random-k-per-patient"
"""Each patient's rows beyond k are dropped uniformly at random, independently of queries
(the synthetic generator's cut)."""
KEYED_HASH_BOUND_METHOD = "keyed-hash-k-per-patient"
"""Each patient keeps the k rows of lowest keyed hash (`row_rank_hashes`) under the seed the
manifest records (the publishing cut)."""
RANDOM_PERIOD_BOUND_METHOD = "random-period-bounds"
"""Each patient's rows are cut to the total and per-period bounds in order of a random
priority (store.period_bounding; the synthetic generator's cut)."""
KEYED_HASH_PERIOD_BOUND_METHOD = "keyed-hash-period-bounds"
"""Each patient's rows are cut to the total and per-period bounds in order of their keyed
hash (`row_rank_hashes`, lowest first) under the manifest's seed (the publishing cut)."""

NULL_VALUE = 0x9E37_79B9_7F4A_7C15
"""What a missing value contributes to a row's hash (any fixed constant)."""
_STEP = np.uint64(0x9E37_79B9_7F4A_7C15)
_MIX_1 = np.uint64(0xBF58_476D_1CE4_E5B9)
_MIX_2 = np.uint64(0x94D0_49BB_1331_11EB)
_DEFAULT_ROWS_PER_VERIFY_PASS = 60_000_000
"""Rows per counting pass when no memory setting is given: the patient-key hash table of
one pass stays a few GB at most."""


class BoundViolationError(ValueError):
    """Some patient has more rows than the declared bound; the version must not go live."""


def truncation_mask(
    patient: npt.NDArray[np.int64], max_contributions: int, rng: np.random.Generator
) -> npt.NDArray[np.bool_]:
    """Which rows to keep so each patient keeps at most `max_contributions`, chosen at random.

    The choice for a patient depends only on that patient's own rows (and the random
    stream), so one patient changes the bounded table by at most `max_contributions` rows.
    """
    if max_contributions < 1:
        raise ValueError("max_contributions must be at least 1")
    order = np.lexsort((rng.random(patient.size), patient))
    ordered = patient[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, ordered.size]))
    keep = np.empty(patient.size, dtype=np.bool_)
    keep[order] = (np.arange(ordered.size) - run_start) < max_contributions
    return keep


# keyed-hash ranks


def splitmix64(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """The SplitMix64 finaliser: a bijection of 64-bit integers that spreads every input bit."""
    z = values ^ (values >> np.uint64(30))
    z = z * _MIX_1
    z = z ^ (z >> np.uint64(27))
    z = z * _MIX_2
    mixed: npt.NDArray[np.uint64] = z ^ (z >> np.uint64(31))
    return mixed


def label_hash(label: str, seed: int) -> int:
    """A string value's 64-bit code: BLAKE2b of its UTF-8 bytes keyed by the seed."""
    digest = hashlib.blake2b(
        label.encode(), digest_size=8, key=(seed % 2**64).to_bytes(8, "little")
    ).digest()
    return int.from_bytes(digest, "little")


class LabelCodes:
    """`label_hash` of every string value seen, computed once per distinct value."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._codes: dict[str, int] = {}

    def of(self, labels: Sequence[str | None]) -> npt.NDArray[np.uint64]:
        out = np.empty(len(labels), dtype=np.uint64)
        for i, label in enumerate(labels):
            if label is None:
                out[i] = NULL_VALUE
                continue
            code = self._codes.get(label)
            if code is None:
                code = self._codes[label] = label_hash(label, self.seed)
            out[i] = code
        return out


def row_rank_hashes(table: pa.Table, codes: LabelCodes) -> npt.NDArray[np.uint64]:
    """Each row's keyed rank hash over all of `table`'s columns, in column order.

    The definition (a pure-Python version lives in the tests):

        h = splitmix64(seed)
        for each column's value v (as an unsigned 64-bit integer):
            h = (h XOR v) * 0x9E3779B97F4A7C15 (mod 2**64);  h = h XOR (h >> 32)
        rank = splitmix64(h)

    where an integer or date (days since 1970-01-01) is its two's-complement value, a string
    is `label_hash(value, seed)` and a missing value is NULL_VALUE. Rows with equal values
    get equal hashes, so which of two identical rows is kept never matters.
    """
    values = [_column_values(column, codes) for column in table.columns]
    return combine_rank_values(values, table.num_rows, codes.seed)


def combine_rank_values(
    columns: Sequence[npt.NDArray[np.uint64]], rows: int, seed: int
) -> npt.NDArray[np.uint64]:
    """The rank hashes of `rows` rows from each column's values as unsigned 64-bit
    integers (see `row_rank_hashes` for what each value is)."""
    h = np.full(rows, seed % 2**64, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = splitmix64(h)
        for values in columns:
            h = (h ^ values) * _STEP
            h ^= h >> np.uint64(32)
        return splitmix64(h)


def _column_values(column: pa.ChunkedArray, codes: LabelCodes) -> npt.NDArray[np.uint64]:
    parts = [_chunk_values(chunk, codes) for chunk in column.chunks]
    if not parts:
        return np.empty(0, dtype=np.uint64)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _chunk_values(chunk: pa.Array, codes: LabelCodes) -> npt.NDArray[np.uint64]:
    kind = chunk.type
    if pa.types.is_dictionary(kind):
        table = codes.of(chunk.dictionary.to_pylist())
        indices = chunk.indices.fill_null(0).to_numpy(zero_copy_only=False)
        values = table[indices] if table.size else np.zeros(len(chunk), dtype=np.uint64)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind) or kind == pa.string_view():
        return _chunk_values(chunk.dictionary_encode(), codes)
    elif pa.types.is_date32(kind):
        values = chunk.view(pa.int32()).fill_null(0).to_numpy().astype(np.int64).view(np.uint64)
    elif pa.types.is_integer(kind):
        values = chunk.fill_null(0).to_numpy().astype(np.int64).view(np.uint64)
    else:
        raise TypeError(f"cannot rank rows by a column of type {kind}")
    if chunk.null_count:
        values = np.where(chunk.is_null().to_numpy(zero_copy_only=False), NULL_VALUE, values)
    return values.astype(np.uint64, copy=False)


def rank_prefix(rank: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint32]:
    """The high 32 bits of rank hashes: what the cut is first decided on (4 bytes a row
    instead of 8 in the buckets), ties on it being settled on the full hash."""
    return (rank >> np.uint64(32)).astype(np.uint32)


@dataclass(frozen=True, slots=True)
class CutPoints:
    """Where each patient over the bound is cut: the rest keep every row.

    A row of such a patient whose rank prefix is below `threshold` is kept, above it
    dropped; of the rows whose prefix equals `threshold`, the `kept_at_threshold` of lowest
    full rank hash are kept. That is exactly the patient's k rows of lowest full hash.
    """

    frame: pl.DataFrame
    """Columns patient_key (Int64), threshold (UInt32), kept_at_threshold (UInt32)."""


def cut_points(
    patient: npt.NDArray[np.int64], prefix: npt.NDArray[np.uint32], max_contributions: int
) -> CutPoints:
    """The cut of every patient with more than `max_contributions` rows among these rows
    (which must hold all of each such patient's rows), from their rows' rank prefixes."""
    if max_contributions < 1:
        raise ValueError("max_contributions must be at least 1")
    k = max_contributions
    frame = pl.DataFrame({"patient_key": patient, "prefix": prefix})
    over = frame.filter(pl.len().over("patient_key") > k)
    threshold = pl.col("prefix").sort().get(k - 1)
    cut = over.group_by("patient_key").agg(
        threshold=threshold,
        kept_at_threshold=(pl.lit(k, pl.UInt32) - (pl.col("prefix") < threshold).sum()),
    )
    return CutPoints(cut.sort("patient_key"))


def keep_mask(
    patient: npt.NDArray[np.int64], rank: npt.NDArray[np.uint64], cut: pl.DataFrame
) -> npt.NDArray[np.bool_]:
    """Which rows survive `cut` (a CutPoints frame), given their full rank hashes.

    The rows must include all rows of every patient in `cut` that are present here."""
    rows = pl.DataFrame(
        {
            "patient_key": patient,
            "rank": rank,
            "prefix": rank_prefix(rank),
            "row": np.arange(patient.size, dtype=np.int64),
        }
    )
    affected = rows.join(cut, on="patient_key", how="inner")
    above = affected.filter(pl.col("prefix") > pl.col("threshold"))
    tied = affected.filter(pl.col("prefix") == pl.col("threshold"))
    ordinal = pl.col("rank").rank("ordinal").over("patient_key")
    beyond_tie = tied.filter(ordinal > pl.col("kept_at_threshold"))
    keep = np.ones(patient.size, dtype=np.bool_)
    keep[above.get_column("row").to_numpy()] = False
    keep[beyond_tie.get_column("row").to_numpy()] = False
    return keep


# verification


def max_rows_per_patient(
    paths: Sequence[Path], rows_per_pass: int = _DEFAULT_ROWS_PER_VERIFY_PASS
) -> int:
    """The largest number of rows any single `patient_key` has across all `paths`.

    Counts in passes over disjoint slices of the key space (keys are HMAC outputs, so their
    low bits split patients evenly), each of at most about `rows_per_pass` rows, so memory
    stays bounded whatever the data's size.
    """
    if not paths:
        return 0
    scan = pl.scan_parquet([str(p) for p in paths]).select("patient_key")
    rows = int(scan.select(pl.len()).collect().item())
    passes = 1 << max(0, int(np.ceil(np.log2(max(1, rows / max(1, rows_per_pass))))))
    worst = 0
    for part in range(passes):
        subset = (
            scan if passes == 1 else scan.filter((pl.col("patient_key") % passes).abs() == part)
        )
        counts = subset.group_by("patient_key").len().select(pl.col("len").max())
        value = counts.collect(engine="streaming").item()
        worst = max(worst, 0 if value is None else int(value))
    return worst


def verify_bound(
    paths: Sequence[Path],
    max_contributions: int,
    *,
    method: str = BOUND_METHOD,
    seed: int | None = None,
    rows_per_pass: int = _DEFAULT_ROWS_PER_VERIFY_PASS,
    period_bounds: PeriodBounds | None = None,
) -> ContributionBound:
    """A verified ContributionBound for `paths`, or BoundViolationError.

    With `period_bounds`, every per-period bound is counted over the files too, and the
    record carries them (only then may a query claim them). Never returns
    `verified=False`: a bound that does not hold is an error, so no caller can publish it by
    mistake.
    """
    if period_bounds:
        maxima = bound_maxima(paths, period_bounds, rows_per_pass)
        broken = violations(maxima, max_contributions, period_bounds)
        if broken:
            raise BoundViolationError("; ".join(broken))
        return ContributionBound(
            max_contributions=max_contributions,
            verified=True,
            method=method,
            seed=seed,
            period_bounds=period_bounds,
        )
    worst = max_rows_per_patient(paths, rows_per_pass)
    if worst > max_contributions:
        raise BoundViolationError(
            f"a patient has {worst} rows, above the bound of {max_contributions}"
        )
    return ContributionBound(
        max_contributions=max_contributions, verified=True, method=method, seed=seed
    )
