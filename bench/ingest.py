"""Ingest throughput: raw extracts validated, minimised and staged, then one publish.

Usage: uv run python bench/ingest.py [--practices 150] [--seed 2025] [--folder DIR]
                                      [--no-publish]

Generates the synthetic dataset and every practice's raw extract (not timed), loads the
opt-out lists, then times `Governance.ingest` practice by practice (bytes already in
memory, as after an upload) and one `Governance.publish` over all of them. Prints rows/s
for the median practice, for the largest, for the whole scale, and the publish time.

For scale on a shared machine, each extract is also read by raw Polars (`read_csv` of the
same bytes, every column a string: the floor any ingest pays) just before it is ingested,
and the ratio of the two is printed: a ratio is comparable between runs at different
loads, rows/s are not.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

from dpgate_server.bounded_pool import in_parallel
from dpgate_server.governance.optouts import OptOutKind
from dpgate_server.governance.service import Governance, GovernancePolicy
from dpgate_server.ledger.model import Outcome, Principal, RequestInfo, Role
from dpgate_server.store.pseudonym import load_or_create_key
from dpgate_server.store.store import DatasetStore
from dpgate_server.synthetic.generator import ensure_demo_dataset
from dpgate_server.synthetic.raw_extracts import write_raw_extracts

OPERATOR = RequestInfo(request_id="bench", rpc="Bench")


class NoAudit:
    def record_event(self, request: RequestInfo, outcome: Outcome, **kwargs: Any) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--practices", type=int, default=150)
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--no-publish", action="store_true")
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="then ingest every extract again this many at a time, as `dpgate-server ingest`",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        run(
            args.folder or Path(scratch),
            args.practices,
            args.seed,
            not args.no_publish,
            args.jobs,
        )


def run(folder: Path, practices: int, seed: int, publish: bool = True, jobs: int = 2) -> None:
    started = time.perf_counter()
    store_root, key_file = folder / "store", folder / "secrets" / "key"
    ensure_demo_dataset(store_root, key_file, practices, seed)
    files = write_raw_extracts(folder / "extracts", practices, seed)
    print(
        f"setup (dataset and {len(files.extracts)} raw extracts): "
        f"{time.perf_counter() - started:.0f} s"
    )
    policy = GovernancePolicy(folder / "governance", 2**34, {}, frozenset({"gp_appointments"}))
    governance = Governance(
        DatasetStore(store_root), policy, lambda: load_or_create_key(key_file), NoAudit()
    )
    governance.load_opt_out_list(OptOutKind.NATIONAL, files.national_opt_out, OPERATOR)
    governance.load_opt_out_list(OptOutKind.TYPE1, files.type1_opt_out, OPERATOR)
    principal = Principal("bench", Role.PROVIDER, "bench", frozenset(files.extracts))
    request = RequestInfo(request_id="bench", rpc="UploadExtract", principal=principal)
    timings: list[tuple[float, int, int]] = []
    raw_s = 0.0
    for code, path in files.extracts.items():
        data = path.read_bytes()
        rows = data.count(b"\n") - 1
        tick = time.perf_counter()
        pl.read_csv(io.BytesIO(data), infer_schema=False)
        raw_s += time.perf_counter() - tick
        tick = time.perf_counter()
        governance.ingest("gp_appointments", code, data, request)
        timings.append((time.perf_counter() - tick, rows, len(data)))
    total_s = sum(t for t, _, _ in timings)
    total_rows = sum(r for _, r, _ in timings)
    total_bytes = sum(b for _, _, b in timings)
    median = sorted(timings, key=lambda t: t[1])[len(timings) // 2]
    largest = max(timings, key=lambda t: t[1])
    print(
        f"one practice (median, {median[1]:,} rows): {median[0]:.2f} s, "
        f"{median[1] / median[0]:,.0f} rows/s"
    )
    print(
        f"one practice (largest, {largest[1]:,} rows): {largest[0]:.2f} s, "
        f"{largest[1] / largest[0]:,.0f} rows/s"
    )
    print(
        f"all {len(timings)} practices: {total_rows:,} rows, {total_bytes / 2**20:,.0f} MiB in "
        f"{total_s:.1f} s = {total_rows / total_s:,.0f} rows/s "
        f"(per-practice rows/s median {statistics.median(r / t for t, r, _ in timings):,.0f})"
    )
    print(
        f"raw Polars read_csv of the same bytes: {raw_s:.1f} s = {total_rows / raw_s:,.0f} rows/s;"
        f" ingest takes {total_s / raw_s:.2f}x raw Polars"
    )
    if jobs > 1:
        tick = time.perf_counter()
        for _ in in_parallel(
            list(files.extracts.items()),
            lambda item: governance.ingest(
                "gp_appointments", item[0], item[1].read_bytes(), request
            ),
            jobs,
        ):
            pass
        wall_s = time.perf_counter() - tick
        print(
            f"again, {jobs} extracts at a time (files read inside): {wall_s:.1f} s wall = "
            f"{total_rows / wall_s:,.0f} rows/s; {wall_s / raw_s:.2f}x raw Polars"
        )
    if not publish:
        return
    tick = time.perf_counter()
    result = governance.publish("gp_appointments", OPERATOR)
    elapsed = time.perf_counter() - tick
    print(
        f"publish {result.version.version}: {result.rows:,} rows from "
        f"{len(result.staged_practices)} uploads in {elapsed:.1f} s "
        f"({result.rows / elapsed:,.0f} rows/s; "
        f"{result.rows_cut_by_bound:,} rows cut by the bound)"
    )


if __name__ == "__main__":
    main()
