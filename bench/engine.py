"""Benchmark the DP query engine against raw Polars and OpenDP's Context API.

For Q1-Q5 at ~1M and ~10M rows (20 and 190 practices of the synthetic generator), prints
per query: the engine's median time (`queries.run`: validate, price, plan, cross-check,
read, noise), the same aggregate in raw Polars on the same scan (key join included), and
OpenDP's own Context API on the same bounded file; the engine/raw ratio in wall-clock and
in CPU seconds (process user + system: steadier than wall-clock on a shared machine); the
peak RSS after the engine's first run; and for Q4 what the noise costs: the same measurement
run on a zero-row file (one draw per cell: OpenDP's fill for keys absent from the data) and
on a file with exactly one row per key (two draws per cell, what a query whose data has
every key pays: OpenDP noises each group's aggregate and, separately, a fill for every key).
Engine and raw runs alternate, so a change of machine load hits both. Each (scale, query,
Polars engine) runs in a fresh child process so timings and peak memory are not polluted by
earlier queries.

    uv run python bench/engine.py [--scales 20,190] [--queries Q2,Q4] [--streaming 0,1]
                                  [--repeats 5] [--data /tmp/dpgate_bench]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import opendp.prelude as dp
import polars as pl

from dpgate_server.queries import Aggregate, Filter, Query, Spend, prepare, run
from dpgate_server.queries.engine import build_measurement
from dpgate_server.queries.keys import KeySets
from dpgate_server.queries.process_settings import configure_process
from dpgate_server.store.store import DatasetStore
from dpgate_server.synthetic.generator import ensure_demo_dataset

QUERIES = ("Q1", "Q2", "Q3", "Q4", "Q5")
DESCRIPTIONS = {
    "Q1": "total count",
    "Q2": "count by practice",
    "Q3": "sum of duration by practice",
    "Q4": "count by practice x week",
    "Q5": "DNA count by mode",
}


def _child(args: argparse.Namespace) -> None:
    """Time one query three ways in this (fresh) process and print one JSON line."""
    configure_process()  # as a query worker does; the parent set the streaming switch
    version = DatasetStore(Path(args.store)).current("gp_appointments")
    meta = version.metadata
    spec = {
        "Q1": (Aggregate.count(), (), ()),
        "Q2": (Aggregate.count(), ("practice_code",), ()),
        "Q3": (Aggregate.sum("duration_minutes"), ("practice_code",), ()),
        "Q4": (Aggregate.count(), ("practice_code", "week"), ()),
        "Q5": (Aggregate.count(), ("mode",), (Filter("status", "=", ("DNA",)),)),
    }[args.query]
    aggregate, group_by, filters = spec
    query = Query("gp_appointments", aggregate, filters, group_by, Spend.epsilon(1.0))

    def engine() -> int:
        return run(version, query).cell_count

    def raw() -> int:
        scan = version.scan_appointments()
        if filters:
            scan = scan.filter(pl.col("status") == "DNA")
        if aggregate.column:
            agg = pl.col(aggregate.column).fill_null(0).clip(0, 60).sum()
        else:
            agg = pl.len()
        if not group_by:
            return scan.select(agg).collect().height
        keys = _keys(version, group_by)
        grouped = scan.group_by(list(group_by)).agg(agg.alias("v"))
        return keys.join(grouped, on=list(group_by), how="left").collect().height

    def context() -> int:
        scan = version.scan_appointments()
        ctx = dp.Context.compositor(
            data=scan,
            privacy_unit=dp.unit_of(contributions=meta.max_contributions),
            privacy_loss=dp.loss_of(epsilon=1.0),
            split_evenly_over=1,
            margins=[dp.polars.Margin(by=[], max_length=meta.max_rows)],
        )
        q = ctx.query()
        if filters:
            q = q.filter(pl.col("status") == "DNA")
        if aggregate.column:
            expr = pl.col(aggregate.column).cast(pl.Int64).fill_null(0).dp.sum((0, 60))
        else:
            expr = dp.len(signed=True)
        if not group_by:
            return q.select(expr).release().collect().height
        keys = _keys(version, group_by)
        released = q.group_by(*group_by).agg(expr).with_keys(keys).release().collect()
        return released.height

    result: dict[str, Any] = {"query": args.query, "streaming": os.environ.get(
        "POLARS_AUTO_NEW_STREAMING", "0"), "rows": sum(
        r.rows for r in version.manifest.appointment_files),
        "load": os.getloadavg()[0]}  # fmt: skip
    first = _measure(engine)
    result["engine_first_s"], result["cells"] = first.wall_s, first.out
    result["engine_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    timings = _alternate({"engine": engine, "raw": raw}, args.repeats)
    for name, (wall, cpu) in timings.items():
        result[f"{name}_s"], result[f"{name}_cpu_s"] = wall, cpu
    result["context_s"] = _alternate({"context": context}, args.repeats)["context"][0]
    if args.query == "Q4":
        prepared = prepare(version, query)
        _, measurement = build_measurement(version, prepared)
        files = _noise_files(Path(args.store), version, group_by)

        def noised(path: Path) -> Callable[[], int]:
            return lambda: int(measurement(pl.scan_parquet(path)).collect().height)

        noise = _alternate({name: noised(path) for name, path in files.items()}, args.repeats)
        for name, (wall, cpu) in noise.items():
            result[f"{name}_s"], result[f"{name}_cpu_s"] = wall, cpu
    print(json.dumps(result), flush=True)


def _keys(version: Any, group_by: tuple[str, ...]) -> Any:
    schema = version.scan_appointments().collect_schema()
    return KeySets.of_version(version, dict(schema)).frame(group_by, ())


def _noise_files(store: Path, version: Any, group_by: tuple[str, ...]) -> dict[str, Path]:
    """Parquet files with the table's schema: no rows, and exactly one row per key."""
    schema = version.scan_appointments().collect_schema()
    empty, per_key = store / "empty.parquet", store / "one_row_per_key.parquet"
    if not empty.exists():
        pl.DataFrame(schema=schema).write_parquet(empty)
    if not per_key.exists():
        keys = _keys(version, group_by).collect()
        keys.select(
            pl.col(name) if name in group_by else pl.lit(None, dtype=dtype).alias(name)
            for name, dtype in schema.items()
        ).write_parquet(per_key)
    return {"noise_zero_rows": empty, "noise_every_key": per_key}


@dataclass(frozen=True, slots=True)
class _Timing:
    wall_s: float
    cpu_s: float
    out: int


def _measure(f: Callable[[], int]) -> _Timing:
    usage, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    out = f()
    wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime
    return _Timing(wall, cpu, out)


def _alternate(runs: dict[str, Callable[[], int]], repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds of each run, the runs taking turns `repeats` times."""
    seen: dict[str, list[_Timing]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, f in runs.items():
            seen[name].append(_measure(f))
    return {
        name: (statistics.median(t.wall_s for t in ts), statistics.median(t.cpu_s for t in ts))
        for name, ts in seen.items()
    }


def _parent(args: argparse.Namespace) -> None:
    data = Path(args.data)
    print(f"# engine benchmark: median of {args.repeats} warm runs after one cold run; times in "
          "seconds (cpu = process user + system); RSS = peak of the child after the cold "
          "engine run (imports included)")  # fmt: skip
    for practices in [int(p) for p in args.scales.split(",")]:
        store = data / f"p{practices}"
        version = ensure_demo_dataset(store, data / "secrets" / "key", practices, seed=7)
        rows = version.manifest.source.get("rows")
        print(f"\n## {practices} practices, {rows:,} rows (bound {version.manifest.bound})")
        print(f"{'query':32s} {'stream':>6s} {'cells':>6s} {'load':>5s} {'cold':>6s} "
              f"{'engine':>7s} {'raw':>6s} {'ratio':>6s} {'cpu':>6s} {'raw cpu':>7s} "
              f"{'ratio':>6s} {'context':>8s} {'RSS MB':>7s}")  # fmt: skip
        for name in args.queries.split(","):
            for flag in args.streaming.split(","):
                env = dict(os.environ, POLARS_AUTO_NEW_STREAMING=flag)
                out = subprocess.run(
                    [sys.executable, __file__, "--child", "--store", str(store), "--query", name,
                     "--repeats", str(args.repeats)],
                    env=env, check=True, capture_output=True, text=True,
                )  # fmt: skip
                r = json.loads(out.stdout.strip().splitlines()[-1])
                label = f"{name} {DESCRIPTIONS[name]}"
                print(f"{label:32s} {flag:>6s} {r['cells']:6d} {r['load']:5.1f} "
                      f"{r['engine_first_s']:6.3f} {r['engine_s']:7.3f} {r['raw_s']:6.3f} "
                      f"{r['engine_s'] / r['raw_s']:6.2f} {r['engine_cpu_s']:6.3f} "
                      f"{r['raw_cpu_s']:7.3f} {r['engine_cpu_s'] / r['raw_cpu_s']:6.2f} "
                      f"{r['context_s']:8.3f} {r['engine_rss_mb']:7.0f}")  # fmt: skip
                if "noise_every_key_s" in r:
                    print(f"{'':32s} noise (join + noise, no aggregation): zero-row file "
                          f"{r['noise_zero_rows_s']:.3f} s ({r['noise_zero_rows_cpu_s']:.3f} cpu), "
                          f"one row per key {r['noise_every_key_s']:.3f} s "
                          f"({r['noise_every_key_cpu_s']:.3f} cpu)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", default="20,190", help="practices per dataset, comma-separated")
    parser.add_argument("--queries", default=",".join(QUERIES), help="comma-separated, Q1-Q5")
    parser.add_argument("--streaming", default="0,1", help="POLARS_AUTO_NEW_STREAMING values")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data", default="/tmp/dpgate_bench")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--query", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
    else:
        _parent(args)


if __name__ == "__main__":
    main()
