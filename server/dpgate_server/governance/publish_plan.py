"""How a publish splits its work so memory stays within the setting, whatever the data size.

Three things are held in memory at once, each sized from `memory_bytes`:

- a *practice group*: consecutive practices (in code order) whose rows are read, cut and
  sorted together (passes 1 and 3);
- a *patient bucket*: every (patient key, rank hash) pair of the patients hashed into it
  (pass 2), so a patient's rows from all practices meet in one bucket;
- a *verification pass*: the patient keys of a slice of the key space, counted.

The bytes per row are measured peaks per stage (rows with their working copies), with a
margin; a practice larger than a group on its own is a group alone (the setting cannot cut
a practice in two). The plan uses exact row counts, which stay inside the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

BYTES_PER_GROUP_ROW = 560
"""Peak bytes per row while a group's rows are read, cut, joined, sorted and written."""
BYTES_PER_BUCKET_ROW = 96
"""Peak bytes per row while a bucket's patients are counted and cut."""
BYTES_PER_PERIOD_BUCKET_ROW = 320
"""The same with per-period bounds: 32-byte rows, sorted and ranked in several windows."""
BYTES_PER_VERIFIED_ROW = 48
"""Peak bytes per row while a slice of the version's patient keys is counted."""
MAX_BUCKETS = 4096
"""Files open at once in pass 1 (one per bucket)."""


@dataclass(frozen=True, slots=True)
class PracticeGroup:
    """Practices read and written together (codes ascending)."""

    codes: tuple[str, ...]

    @property
    def last(self) -> str:
        return self.codes[-1]


@dataclass(frozen=True, slots=True)
class PublishPlan:
    """The work split of one publish."""

    groups: tuple[PracticeGroup, ...]
    buckets: int
    """A power of two."""
    verify_rows_per_pass: int


def plan_publish(
    practice_rows: Mapping[str, int],
    memory_bytes: int,
    *,
    bucket_row_bytes: int = BYTES_PER_BUCKET_ROW,
) -> PublishPlan:
    """The groups, bucket count and verification slice for `practice_rows` (rows of each
    included practice, before opt-outs and the cut) under `memory_bytes`
    (`bucket_row_bytes`: BYTES_PER_PERIOD_BUCKET_ROW for a cut with per-period bounds)."""
    if memory_bytes < 1:
        raise ValueError("the memory setting must be positive")
    group_rows = max(1, memory_bytes // BYTES_PER_GROUP_ROW)
    groups: list[PracticeGroup] = []
    codes: list[str] = []
    rows = 0
    for code in sorted(practice_rows):
        size = practice_rows[code]
        if codes and rows + size > group_rows:
            groups.append(PracticeGroup(tuple(codes)))
            codes, rows = [], 0
        codes.append(code)
        rows += size
    if codes:
        groups.append(PracticeGroup(tuple(codes)))
    total = sum(practice_rows.values())
    bucket_rows = max(1, memory_bytes // bucket_row_bytes)
    buckets = 1
    while buckets * bucket_rows < total and buckets < MAX_BUCKETS:
        buckets *= 2
    return PublishPlan(
        groups=tuple(groups),
        buckets=buckets,
        verify_rows_per_pass=max(1, memory_bytes // BYTES_PER_VERIFIED_ROW),
    )
