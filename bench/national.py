"""National scale through the real data path: raw extracts -> ingest -> publish -> gRPC.

Usage: uv run python bench/national.py [--practices all] [--batch 400] [--folder DIR]
                                       [--seed 2025] [--repeats 3] [--queries-only]

What a health service would do with its 6,229 practices, on this machine, with the
operator's own commands as subprocesses (each one's peak RSS sampled with psutil, children
included):

1. declare the dataset: a first, empty version carrying the national practice table
   (public metadata), so governance knows every practice before any upload;
2. load both opt-out lists (`dpgate-server optouts load`);
3. in batches of --batch practices: write the batch's raw extracts (synthetic; not timed,
   drawn by a background process while the previous batch is ingested), ingest the folder
   (`dpgate-server ingest`, timed), delete the batch; every 10th batch, raw Polars
   `read_csv` of the same files too (all columns strings: the floor any ingest pays), so a
   ratio comparable across machine loads is printed beside rows/s;
4. publish (`dpgate-server publish`, timed);
5. serve the published version (`dpgate-server serve`) and ask four national questions
   through gRPC, each interleaved with the same aggregate in raw Polars (streaming engine)
   on the version's own files, --repeats times, every gRPC call a fresh release.

Disk is sampled through every step (this bench's folder: staging, version, batch); the
peak is printed beside the published version's size. Row counts printed here are the
bench's own synthetic figures (it wrote the extracts), never something the service shows.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import psutil

from dpgate import AdminClient, Client, QuerySpec, count, total
from dpgate_server.store.bounding import verify_bound
from dpgate_server.store.pseudonym import key_id, load_or_create_key
from dpgate_server.store.store import DatasetStore, DatasetVersion
from dpgate_server.synthetic.generator import _write_public_tables, generate_dataset
from dpgate_server.synthetic.gp_metadata import (
    DATASET_ID,
    MAX_CONTRIBUTIONS,
    gp_appointments_metadata,
)
from dpgate_server.synthetic.month_files import MonthFiles
from dpgate_server.synthetic.population import PracticeTable, select_practices
from dpgate_server.synthetic.raw_extracts import (
    opt_out_numbers,
    practice_extract,
    write_extract,
    write_opt_out_list,
)
from dpgate_server.vocabulary.england_calendar import window_calendar

CLI = [sys.executable, "-m", "dpgate_server.cli"]
GiB = 2**30


# measuring


@dataclass
class Peak:
    """Peak RSS of a process tree and of a folder's size, sampled in a thread."""

    rss: int = 0
    disk: int = 0


def folder_size(root: Path) -> int:
    total_bytes = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):  # removed while walking
                total_bytes += os.lstat(os.path.join(dirpath, name)).st_size
    return total_bytes


@contextmanager
def sampled(pid: int | None, root: Path, peak: Peak) -> Iterator[None]:
    """Sample the tree of `pid` (RSS, every 50 ms) and `root`'s size (every 2 s)."""
    stop = threading.Event()

    def rss() -> None:
        process = psutil.Process(pid) if pid is not None else None
        while process is not None and not stop.is_set():
            try:
                tree = [process, *process.children(recursive=True)]
                peak.rss = max(peak.rss, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass
            stop.wait(0.05)

    def disk() -> None:
        while not stop.is_set():
            peak.disk = max(peak.disk, folder_size(root))
            stop.wait(2.0)

    threads = [threading.Thread(target=f, daemon=True) for f in (rss, disk)]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join()
        peak.disk = max(peak.disk, folder_size(root))


def run_command(args: Sequence[str], root: Path, peak: Peak) -> float:
    """Run one operator command to its end; its seconds (output kept for a failure)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    with sampled(process.pid, root, peak):
        output, _ = process.communicate()
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit(f"{' '.join(args[:2])} failed ({process.returncode}):\n{output[-3000:]}")
    return elapsed


def gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


# setting up


def write_config(folder: Path) -> Path:
    config = folder / "server.toml"
    config.write_text(
        '[server]\naddress = "127.0.0.1:0"\n'
        f'[storage]\ndata_dir = "{folder / "store"}"\n'
        f'ledger_path = "{folder / "ledger.sqlite"}"\nkey_file = "{folder / "secrets" / "key"}"\n'
        "[demo]\nenabled = false\n"
        "[limits]\nrequests_per_second = 100000\nburst = 100000\nmax_queued_queries = 64\n"
        "peer_requests_per_second = 1000000\npeer_burst = 1000000\n"
    )
    return config


def declare_dataset(folder: Path, table: PracticeTable) -> None:
    """A first version with the national practice table and no rows: the public metadata
    an operator declares before any practice uploads (governance captures its practices)."""
    key = load_or_create_key(folder / "secrets" / "key")
    store = DatasetStore(folder / "store")
    builder = store.begin_version(gp_appointments_metadata(table))
    paths = [builder.appointments_path(m) for m in window_calendar().months]
    with MonthFiles(paths, table):
        pass  # every month's file exists, empty
    _write_public_tables(builder.public_table_path, table)
    bound = verify_bound(paths, MAX_CONTRIBUTIONS)
    source = {"generator": "bench/national.py declaration", "key_id": key_id(key), "rows": 0}
    store.publish(builder, bound, source)


def write_batch(
    out: Path, practices: int | None, positions: Sequence[int], seed: int
) -> tuple[int, int]:
    """Write the raw extracts of the practices at `positions`; (rows, bytes) written."""
    table = select_practices(practices)
    out.mkdir(parents=True, exist_ok=True)
    rows = size = 0
    for position in positions:
        frame = practice_extract(table, position, seed)
        path = out / f"{table.practice_code[position]}.csv"
        write_extract(frame, path)
        rows += frame.height
        size += path.stat().st_size
    return rows, size


# ingest and publish


@dataclass
class LoadFigures:
    rows: int = 0
    bytes: int = 0
    ingest_s: float = 0.0
    raw_rows: int = 0
    raw_s: float = 0.0
    raw_ingest_s: float = 0.0
    peak: Peak = field(default_factory=Peak)


def raw_read(folder: Path) -> float:
    started = time.perf_counter()
    for path in sorted(folder.glob("*.csv")):
        pl.read_csv(path, infer_schema=False)
    return time.perf_counter() - started


def load(folder: Path, config: Path, practices: int | None, batch: int, seed: int) -> LoadFigures:
    table = select_practices(practices)
    figures = LoadFigures()
    positions = list(range(len(table)))
    batches = [positions[i : i + batch] for i in range(0, len(positions), batch)]
    # spawn, not fork: a forked child of a process that has used Polars' threads can hang.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending: Future[tuple[int, int]] = pool.submit(
            write_batch, folder / "batch-0", practices, batches[0], seed
        )
        for index in range(len(batches)):
            batch_dir = folder / f"batch-{index}"
            rows, size = pending.result()
            if index + 1 < len(batches):  # drawn while this one is ingested
                pending = pool.submit(
                    write_batch, folder / f"batch-{index + 1}", practices, batches[index + 1], seed
                )
            peak = Peak()
            seconds = run_command(["ingest", str(batch_dir), "--config", str(config)], folder, peak)
            figures.rows += rows
            figures.bytes += size
            figures.ingest_s += seconds
            figures.peak.rss = max(figures.peak.rss, peak.rss)
            figures.peak.disk = max(figures.peak.disk, peak.disk)
            note = ""
            if index % 10 == 0:
                raw_s = raw_read(batch_dir)
                figures.raw_rows += rows
                figures.raw_s += raw_s
                figures.raw_ingest_s += seconds
                note = f"; raw read_csv {rows / raw_s:,.0f} rows/s, ingest {seconds / raw_s:.2f}x"
            shutil.rmtree(batch_dir)
            print(
                f"  batch {index + 1}/{len(batches)}: {len(batches[index])} practices, "
                f"{rows:,} rows, {size / 2**20:,.0f} MiB in {seconds:.1f} s = "
                f"{rows / seconds:,.0f} rows/s; peak RSS {gib(peak.rss)}{note}",
                flush=True,
            )
    return figures


# queries


@dataclass
class Server:
    process: subprocess.Popen[str]
    target: str
    analyst_token: str


def start_server(config: Path) -> Server:
    created = subprocess.run(
        [*CLI, "create-admin-token", "--config", str(config)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    process = subprocess.Popen(
        [*CLI, "serve", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    match = re.search(r"listening on (\S+)", process.stdout.readline())
    assert match, "the server did not start"
    with AdminClient(match.group(1), created.stdout.strip()) as admin:
        admin.set_cap(DATASET_ID, epsilon=10**6, reason="benchmark")
        analyst = admin.create_requester("Bench", "bench-national", "benchmark")
        admin.grant(
            analyst.requester_id, DATASET_ID, epsilon=10**5, purpose="testing",
            agreement="DSA-TEST",
        )  # fmt: skip
        token = admin.issue_token(analyst.requester_id, "analyst").token
    return Server(process, match.group(1), token)


QUESTIONS: dict[str, tuple[Callable[[], QuerySpec], Callable[[pl.LazyFrame], pl.LazyFrame]]] = {
    "count by practice": (
        lambda: count(DATASET_ID).by("practice_code"),
        lambda scan: scan.group_by("practice_code").agg(pl.len()),
    ),
    "count by practice x month": (
        lambda: count(DATASET_ID).by("practice_code", "month"),
        lambda scan: scan.group_by("practice_code", "month").agg(pl.len()),
    ),
    "SUM duration by practice x month": (
        lambda: total(DATASET_ID, "duration_minutes").by("practice_code", "month"),
        lambda scan: scan.group_by("practice_code", "month").agg(
            pl.col("duration_minutes").fill_null(0).clip(0, 60).sum()
        ),
    ),
    "DNA count by mode x month": (
        lambda: count(DATASET_ID).where(status="DNA").by("mode", "month"),
        lambda scan: scan.filter(pl.col("status") == "DNA").group_by("mode", "month").agg(pl.len()),
    ),
}


def ask(folder: Path, config: Path, repeats: int) -> None:
    version = DatasetStore(folder / "store").current(DATASET_ID)
    print(
        f"version {version.version}: {version_size(version) / GiB:.2f} GiB on disk; "
        f"{len(QUESTIONS)} questions x {repeats}, gRPC (fresh release each) vs raw Polars "
        f"streaming on the same files, interleaved",
        flush=True,
    )
    server = start_server(config)
    peak = Peak()
    epsilon = iter(round(1.0 + i * 1e-6, 9) for i in range(1, 10**6))
    try:
        with (
            sampled(server.process.pid, folder / "secrets", peak),
            Client(server.target, server.analyst_token, timeout=1800) as client,
        ):
            client.query(count(DATASET_ID).epsilon(0.5))  # a worker warmed up, not timed
            for name, (spec, raw) in QUESTIONS.items():
                grpc_s: list[float] = []
                raw_s: list[float] = []
                cells = 0
                for _ in range(repeats):
                    tick = time.perf_counter()
                    result = client.query(spec().epsilon(next(epsilon)))
                    grpc_s.append(time.perf_counter() - tick)
                    assert not result.repeat
                    cells = result.frame.height
                    tick = time.perf_counter()
                    raw(scan_month_column(version)).collect(engine="streaming")
                    raw_s.append(time.perf_counter() - tick)
                g, r = statistics.median(grpc_s), statistics.median(raw_s)
                print(
                    f"  {name:34s} {cells:>7,} cells | gRPC median {g:7.2f} s "
                    f"(min {min(grpc_s):.2f}) | raw Polars streaming {r:7.2f} s "
                    f"(min {min(raw_s):.2f}) | ratio {g / r:.2f}x",
                    flush=True,
                )
    finally:
        server.process.terminate()
        try:
            server.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.process.kill()
    print(f"  peak RSS, server and its workers together: {gib(peak.rss)}")


def scan_month_column(version: DatasetVersion) -> pl.LazyFrame:
    """The version's rows with the `month` column a query groups by (as the engine sees it)."""
    scan = version.scan_appointments()
    if "month" in scan.collect_schema():
        return scan
    return scan.with_columns(pl.col("appointment_date").dt.truncate("1mo").alias("month"))


def version_size(version: DatasetVersion) -> int:
    return folder_size(version.path)


# main


def publish_timed(folder: Path, config: Path) -> float:
    peak = Peak()
    seconds = run_command(["publish", DATASET_ID, "--config", str(config)], folder, peak)
    version = DatasetStore(folder / "store").current(DATASET_ID)
    size = version_size(version)
    rows = sum(f.rows for f in version.manifest.appointment_files)
    print(
        f"publish: {rows:,} rows in {seconds:.0f} s ({rows / seconds:,.0f} rows/s); peak RSS "
        f"{gib(peak.rss)}; disk at peak {gib(peak.disk)} (version {gib(size)}: "
        f"{peak.disk / max(size, 1):.1f}x)",
        flush=True,
    )
    return seconds


def load_opt_outs(
    folder: Path, config: Path, table: PracticeTable, seed: int, share: float
) -> None:
    national, type1 = opt_out_numbers(table, seed)
    keep = max(1, round(1 / share)) if share < 1 else 1
    lists = {"national": folder / "national.csv", "type1": folder / "type1.csv"}
    write_opt_out_list(sorted(national)[::keep], lists["national"])
    write_opt_out_list(sorted(type1)[::keep], lists["type1"])
    for kind, path in lists.items():
        run_command(["optouts", "load", str(path), "--kind", kind, "--config", str(config)],
                    folder, Peak())  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--practices", default="all", help='N (the first N) or "all"')
    parser.add_argument("--batch", type=int, default=400)
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/dpgate-bench-national"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--opt-out-share", type=float, default=None,
        help="load every 1/share-th number of each opt-out list (default: all up to 150 "
        "practices, 1/66 at national scale, where each test-range number is shared by ~66 "
        "synthetic patients and the whole lists would name nearly every patient)",
    )  # fmt: skip
    parser.add_argument("--queries-only", action="store_true", help="reuse a published run")
    parser.add_argument(
        "--carried", action="store_true",
        help="no extracts: generate the dataset (not timed), then publish it with every "
        "practice carried forward (timed), then the questions",
    )  # fmt: skip
    args = parser.parse_args()
    folder: Path = args.folder
    config = folder / "server.toml"
    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / GiB:.0f} GiB")
    practices = None if args.practices == "all" else int(args.practices)
    if args.carried:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        config = write_config(folder)
        started = time.perf_counter()
        generate_dataset(
            DatasetStore(folder / "store"), load_or_create_key(folder / "secrets" / "key"),
            practices, args.seed,
        )  # fmt: skip
        print(f"generated the dataset in {time.perf_counter() - started:.0f} s (not timed below)")
        publish_timed(folder, config)
    elif not args.queries_only:
        table = select_practices(practices)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        config = write_config(folder)
        started = time.perf_counter()
        declare_dataset(folder, table)
        share = args.opt_out_share
        if share is None:
            share = 1.0 if len(table) <= 150 else 1 / 66
        load_opt_outs(folder, config, table, args.seed, share)
        print(f"declared {len(table):,} practices, opt-out lists loaded (share {share:.3f}; "
              f"{time.perf_counter() - started:.0f} s, not timed below)", flush=True)  # fmt: skip
        loaded = load(folder, config, practices, args.batch, args.seed)
        print(
            f"ingest: {loaded.rows:,} rows, {loaded.bytes / GiB:.1f} GiB of CSV in "
            f"{loaded.ingest_s:.0f} s = {loaded.rows / loaded.ingest_s:,.0f} rows/s; "
            f"peak RSS {gib(loaded.peak.rss)}; disk at peak {gib(loaded.peak.disk)} "
            f"(staging and one batch)",
            flush=True,
        )
        if loaded.raw_s:
            print(
                f"  sampled batches: raw Polars read_csv {loaded.raw_rows / loaded.raw_s:,.0f}"
                f" rows/s; ingest took {loaded.raw_ingest_s / loaded.raw_s:.2f}x raw read_csv",
                flush=True,
            )
        seconds = publish_timed(folder, config)
        print(
            f"ingest + publish: {(loaded.ingest_s + seconds) / 60:.1f} min (target under 60 min)",
            flush=True,
        )
    ask(folder, config, args.repeats)


if __name__ == "__main__":
    main()
