"""How much memory a query worker needs for an answer, from public metadata alone.

A worker holds the engine (~160 MB idle, ~350 MB after a first small query) and, for a
grouped answer, the public key frame, the noised aggregate and the answer's cells, each a
row per cell with a value per column. The data scanned is streamed, so it bounds memory by
the engine's chunk size and thread count, not by the rows: the largest national query
measured (practice x month, 357.8M rows) peaked at 2.2 GiB, within the default cap.

The estimate decides one thing: a query whose cells alone would not fit in a worker is
refused before it runs (`engine._check_memory`), rather than started, killed by the pool's
watchdog and answered with a failure. It uses only what the requester could compute
(cells from the public keys, columns from the query), so a refusal says nothing about the
data; a query that fits by this estimate but not in fact is still stopped by the watchdog,
with nothing charged.
"""

from __future__ import annotations

WORKER_BASELINE_BYTES = 400 * 2**20
"""A worker with the engine loaded and its first plan run (measured 177-189 MiB in one
process, ~350 MB in a pool worker), rounded up."""
BYTES_PER_CELL_COLUMN = 2_048
"""Memory per cell and column of a grouped answer: the key frame, the joined aggregate,
the noise and the released frame each hold a copy. Measured in one process on 20
practices: ~126 bytes (175,200 cells x 4 columns added 72 MiB); rounded up 16x to stay
conservative until national runs measure it."""


def estimated_worker_bytes(cells: int, columns: int) -> int:
    """Memory a worker needs to answer `cells` cells of `columns` columns (group columns
    plus the value)."""
    return WORKER_BASELINE_BYTES + cells * columns * BYTES_PER_CELL_COLUMN
