"""Publish-time contribution bounding: at most `max_contributions` rows per patient.

A version whose every patient has at most k rows can be queried with OpenDP's row-level
unit (`contributions=k`) and no per-query truncation (OPENDP_POLARS.md section 12). OpenDP
cannot tell whether a file was bounded, so the bound is only *declared* in a version's
manifest after `verify_bound` has counted the rows of every patient across all of the
version's files; a file with one patient over k fails and is never marked verified.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from dpgate_server.store.store import ContributionBound

BOUND_METHOD = "random-k-per-patient"
"""Each patient's rows beyond k are dropped uniformly at random, independently of queries."""

_ROWS_PER_VERIFY_PASS = 60_000_000
"""Rows per counting pass: the patient-key hash table of one pass stays a few GB at most."""


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


def bound_lazyframe(frame: pl.LazyFrame, max_contributions: int, seed: int) -> pl.LazyFrame:
    """`frame` cut to at most `max_contributions` random rows per `patient_key`.

    For publishing a version built from ingested practices (a patient may appear at several
    practices, so the cut must see the whole version, not one practice at a time).
    """
    rank = pl.int_range(pl.len()).shuffle(seed=seed).over("patient_key")
    return frame.filter(rank < max_contributions)


def max_rows_per_patient(paths: Sequence[Path]) -> int:
    """The largest number of rows any single `patient_key` has across all `paths`.

    Counts in passes over disjoint slices of the key space (keys are HMAC outputs, so their
    low bits split patients evenly) to keep memory bounded at national scale.
    """
    if not paths:
        return 0
    scan = pl.scan_parquet([str(p) for p in paths]).select("patient_key")
    rows = int(scan.select(pl.len()).collect().item())
    passes = 1 << max(0, int(np.ceil(np.log2(max(1, rows / _ROWS_PER_VERIFY_PASS)))))
    worst = 0
    for part in range(passes):
        subset = (
            scan if passes == 1 else scan.filter((pl.col("patient_key") % passes).abs() == part)
        )
        counts = subset.group_by("patient_key").len().select(pl.col("len").max())
        value = counts.collect(engine="streaming").item()
        worst = max(worst, 0 if value is None else int(value))
    return worst


def verify_bound(paths: Sequence[Path], max_contributions: int) -> ContributionBound:
    """A verified ContributionBound for `paths`, or BoundViolationError.

    Never returns `verified=False`: a bound that does not hold is an error, so no caller can
    publish it by mistake.
    """
    worst = max_rows_per_patient(paths)
    if worst > max_contributions:
        raise BoundViolationError(
            f"a patient has {worst} rows, above the bound of {max_contributions}"
        )
    return ContributionBound(
        max_contributions=max_contributions, verified=True, method=BOUND_METHOD
    )
