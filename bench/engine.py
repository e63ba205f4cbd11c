"""Benchmark the DP query engine against raw Polars and OpenDP's Context API.

For Q1-Q5 at ~1M and ~10M rows (20 and 190 practices of the synthetic generator), prints
per query: the engine's median time (`queries.run`: validate, price, plan, cross-check,
read, noise), the same aggregate in raw Polars on the same scan (key join included), and
OpenDP's own Context API on the same bounded file; the engine/raw ratio; the peak RSS of
the engine phase; and for Q4 the split between aggregation and noise (noise alone = the
same measurement run on a zero-row file). Each (scale, query, Polars engine) runs in a
fresh child process so timings and peak memory are not polluted by earlier queries.

    uv run python bench/engine.py [--scales 20,190] [--repeats 5] [--data /tmp/dpgate_bench]
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
        r.rows for r in version.manifest.appointment_files)}  # fmt: skip
    result["engine_first_s"], result["cells"] = _timed_once(engine)
    result["engine_s"] = _median(engine, args.repeats)
    result["engine_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["raw_s"] = _median(raw, args.repeats)
    result["context_s"] = _median(context, args.repeats)
    if args.query == "Q4":
        prepared = prepare(version, query)
        empty_path = Path(args.store) / "empty.parquet"
        if not empty_path.exists():
            version.scan_appointments().head(0).collect().write_parquet(empty_path)
        _, measurement = build_measurement(version, prepared)
        empty = pl.scan_parquet(empty_path)
        result["noise_only_s"] = _median(lambda: measurement(empty).collect().height,
                                         args.repeats)  # fmt: skip
    print(json.dumps(result), flush=True)


def _keys(version: Any, group_by: tuple[str, ...]) -> Any:
    schema = version.scan_appointments().collect_schema()
    return KeySets.of_version(version, dict(schema)).frame(group_by, ())


def _timed_once(f: Callable[[], int]) -> tuple[float, int]:
    t0 = time.perf_counter()
    out = f()
    return time.perf_counter() - t0, out


def _median(f: Callable[[], int], repeats: int) -> float:
    return statistics.median(_timed_once(f)[0] for _ in range(repeats))


def _parent(args: argparse.Namespace) -> None:
    data = Path(args.data)
    print(f"# engine benchmark: median of {args.repeats} warm runs after one cold run; times in "
          "seconds; RSS = peak of the child after the engine phase (imports included)")  # fmt: skip
    for practices in [int(p) for p in args.scales.split(",")]:
        store = data / f"p{practices}"
        version = ensure_demo_dataset(store, data / "secrets" / "key", practices, seed=7)
        rows = version.manifest.source.get("rows")
        print(f"\n## {practices} practices, {rows:,} rows (bound {version.manifest.bound})")
        print(f"{'query':32s} {'stream':>6s} {'cells':>6s} {'cold':>6s} {'engine':>7s} "
              f"{'raw':>6s} {'ratio':>6s} {'context':>8s} {'RSS MB':>7s}")  # fmt: skip
        for name in QUERIES:
            for flag in ("0", "1"):
                env = dict(os.environ, POLARS_AUTO_NEW_STREAMING=flag)
                out = subprocess.run(
                    [sys.executable, __file__, "--child", "--store", str(store), "--query", name,
                     "--repeats", str(args.repeats)],
                    env=env, check=True, capture_output=True, text=True,
                )  # fmt: skip
                r = json.loads(out.stdout.strip().splitlines()[-1])
                label = f"{name} {DESCRIPTIONS[name]}"
                print(f"{label:32s} {flag:>6s} {r['cells']:6d} {r['engine_first_s']:6.3f} "
                      f"{r['engine_s']:7.3f} {r['raw_s']:6.3f} {r['engine_s'] / r['raw_s']:6.2f} "
                      f"{r['context_s']:8.3f} {r['engine_rss_mb']:7.0f}")  # fmt: skip
                if "noise_only_s" in r:
                    noise = r["noise_only_s"]
                    print(f"{'':32s} Q4 split: noise only (join + noise on a zero-row file) "
                          f"{noise:.3f} s, aggregation ~{r['engine_s'] - noise:.3f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", default="20,190", help="practices per dataset, comma-separated")
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
