"""End-to-end benchmark: Q1-Q5 through gRPC vs the engine in-process vs raw Polars.

For each scale (20 and 190 practices of the synthetic generator: ~1.2M and ~12M rows,
generated once into --data and reused), this starts a real server as a subprocess
(`dpgate-server serve`, default settings but a deep queue and no rate limit), bootstraps
it like an operator (`dpgate-server create-admin-token`, then an AdminClient sets a cap
and grants an analyst), and prints:

- p50/p95 latency of Q1-Q5 (bench/engine.py's queries) three ways, interleaved per
  repetition so drifting machine load hits all three alike: a real `Client.query` over
  gRPC (validation, ledger lookup, worker, debit, cells streamed back, frame built); the
  engine in this process (`engine.run`: validate, price, plan, read, noise); and the same
  aggregate in raw Polars on the same scan (key join included, no noise). Every gRPC and
  engine run is a fresh release: epsilon varies by 1e-6, so no run is a free repeat.
- a repeated (free) query's latency: the same Q2 and Q4 asked again.
- by answer size (--phases cells): ~190, ~10k and ~70k cells (Q2, Q4, Q6), fresh gRPC and
  free-repeat gRPC p50/p95 beside raw Polars on the same files, interleaved per repetition.
- throughput with --clients concurrent clients (one channel and one connection each) on a
  mixed workload of fresh Q1-Q5, with per-call p50/p95 and how often the server said OVERLOADED.
- peak RSS of the server process and of its children (the query workers, and
  multiprocessing's small resource tracker), psutil-sampled every 20 ms.

    uv run python bench/grpc_e2e.py [--scales 20,190] [--repeats 20] [--clients 16]
                                    [--phases latency,cells,repeat,throughput]
                                    [--processes 1,2]

With --processes 1,2 each scale is run once per count of serving processes
(`server.processes`; workers and limits are divided between them), for throughput.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import psutil

from dpgate import AdminClient, Client, OverloadedError, QuerySpec, count, total
from dpgate_server.queries import Aggregate, Filter, Query, Spend, run
from dpgate_server.queries.keys import KeySets
from dpgate_server.queries.process_settings import configure_process
from dpgate_server.store.store import DatasetVersion
from dpgate_server.synthetic.generator import ensure_demo_dataset

DATASET = "gp_appointments"
QUERIES = ("Q1", "Q2", "Q3", "Q4", "Q5")
DESCRIPTIONS = {
    "Q1": "total count",
    "Q2": "count by practice",
    "Q3": "sum of duration by practice",
    "Q4": "count by practice x week",
    "Q5": "DNA count by mode",
    "Q6": "count by practice x week x weekday",
}
ENGINE_SPECS: dict[str, tuple[Aggregate, tuple[str, ...], tuple[Filter, ...]]] = {
    "Q1": (Aggregate.count(), (), ()),
    "Q2": (Aggregate.count(), ("practice_code",), ()),
    "Q3": (Aggregate.sum("duration_minutes"), ("practice_code",), ()),
    "Q4": (Aggregate.count(), ("practice_code", "week"), ()),
    "Q5": (Aggregate.count(), ("mode",), (Filter("status", "=", ("DNA",)),)),
    "Q6": (Aggregate.count(), ("practice_code", "week", "weekday"), ()),
}
SIZED = ("Q2", "Q4", "Q6")
"""~190, ~10k and ~70k cells at 190 practices: what an answer's size costs."""


def client_spec(name: str, epsilon: float) -> QuerySpec:
    """The client-side twin of ENGINE_SPECS[name]."""
    spec = {
        "Q1": count(DATASET),
        "Q2": count(DATASET).by("practice_code"),
        "Q3": total(DATASET, "duration_minutes").by("practice_code"),
        "Q4": count(DATASET).by("practice_code", "week"),
        "Q5": count(DATASET).where(status="DNA").by("mode"),
        "Q6": count(DATASET).by("practice_code", "week", "weekday"),
    }[name]
    return spec.epsilon(epsilon)


class Epsilons:
    """1.0, 1.000001, ...: a fresh spend per call, so every run is a new release."""

    def __init__(self) -> None:
        self._next = itertools.count(1)
        self._lock = threading.Lock()

    def fresh(self) -> float:
        with self._lock:
            return round(1.0 + next(self._next) * 1e-6, 9)


# the server


@dataclass
class Server:
    process: subprocess.Popen[str]
    target: str
    analyst_token: str
    peaks: dict[str, float] = field(default_factory=dict)


def start_server(store: Path, folder: Path, processes: int = 1) -> Server:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    config = folder / "server.toml"
    config.write_text(
        f'[server]\naddress = "127.0.0.1:0"\nprocesses = {processes}\n'
        f'[storage]\ndata_dir = "{store}"\nledger_path = "{folder / "ledger.sqlite"}"\n'
        f'key_file = "{folder / "key"}"\n[demo]\nenabled = false\n'
        "[limits]\nrequests_per_second = 100000\nburst = 100000\nmax_queued_queries = 64\n"
        "peer_requests_per_second = 1000000\npeer_burst = 1000000\n"
    )
    cli = [sys.executable, "-m", "dpgate_server.cli"]
    created = subprocess.run(
        [*cli, "create-admin-token", "--config", str(config)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    admin_token = created.stdout.strip()
    process = subprocess.Popen(
        [*cli, "serve", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    match = None
    for line in process.stdout:  # several processes: each says it is ready, then the parent
        match = re.search(r"listening on (\S+)", line)
        if match:
            break
    assert match, "the server did not start"
    threading.Thread(target=lambda: [None for _ in process.stdout or ()], daemon=True).start()
    target = match.group(1)
    with AdminClient(target, admin_token) as admin:
        admin.set_cap(DATASET, epsilon=10**6, reason="benchmark")
        analyst = admin.create_requester("Bench", "bench", "benchmark")
        admin.grant(
            analyst.requester_id, DATASET, epsilon=10**5, purpose="testing", agreement="DSA-TEST"
        )
        token = admin.issue_token(analyst.requester_id, "analyst").token
    return Server(process, target, token)


@contextmanager
def rss_sampler(server: Server) -> Iterator[None]:
    """Peak RSS of the server process, of its largest worker, and of all together (MB)."""
    stop = threading.Event()
    root = psutil.Process(server.process.pid)

    def sample() -> None:
        while not stop.is_set():
            try:
                own = root.memory_info().rss
                children = [c.memory_info().rss for c in root.children(recursive=True)]
            except psutil.Error:
                children, own = [], 0
            mb = 1024 * 1024
            for key, value in (("server", own), ("child", max(children, default=0)),
                               ("total", own + sum(children))):  # fmt: skip
                server.peaks[key] = max(server.peaks.get(key, 0.0), value / mb)
            server.peaks["children"] = max(server.peaks.get("children", 0), len(children))
            stop.wait(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()


# the three ways


def raw_polars(version: DatasetVersion, name: str) -> Callable[[], int]:
    aggregate, group_by, filters = ENGINE_SPECS[name]
    schema = dict(version.scan_appointments().collect_schema())
    keys = KeySets.of_version(version, schema).frame(group_by, ()) if group_by else None

    def go() -> int:
        scan = version.scan_appointments()
        if filters:
            scan = scan.filter(pl.col("status") == "DNA")
        agg = (
            pl.col(aggregate.column).fill_null(0).clip(0, 60).sum()
            if aggregate.column
            else pl.len()
        )
        if keys is None:
            return scan.select(agg).collect().height
        grouped = scan.group_by(list(group_by)).agg(agg.alias("v"))
        return keys.join(grouped, on=list(group_by), how="left").collect().height

    return go


def engine_in_process(version: DatasetVersion, name: str, eps: Epsilons) -> Callable[[], int]:
    aggregate, group_by, filters = ENGINE_SPECS[name]

    def go() -> int:
        query = Query(DATASET, aggregate, filters, group_by, Spend.epsilon(eps.fresh()))
        return run(version, query).cell_count

    return go


def through_grpc(client: Client, name: str, eps: Epsilons) -> Callable[[], int]:
    def go() -> int:
        result = client.query(client_spec(name, eps.fresh()))
        assert not result.repeat
        return result.frame.height

    return go


def free_repeat(client: Client, spec: QuerySpec) -> Callable[[], int]:
    def go() -> int:
        result = client.query(spec)
        assert result.repeat
        return result.frame.height

    return go


def timed(f: Callable[[], int]) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def p50_p95(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


# the phases


def latency_phase(version: DatasetVersion, client: Client, repeats: int, eps: Epsilons) -> None:
    header = (
        f"{'query':32s} {'cells':>6s} | {'gRPC p50':>8s} {'p95':>8s} | {'engine p50':>10s} "
        f"{'p95':>8s} | {'raw p50':>8s} {'p95':>8s} | {'gRPC/engine':>11s} {'overhead':>9s}"
    )
    print(f"\n{header}")
    for name in QUERIES:
        ways = {
            "grpc": through_grpc(client, name, eps),
            "engine": engine_in_process(version, name, eps),
            "raw": raw_polars(version, name),
        }
        cells = ways["grpc"]()  # warm: the workers' and this process's first run of it
        ways["engine"]()
        ways["raw"]()
        samples: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(repeats):
            for way, f in ways.items():
                samples[way].append(timed(f))
        g, e, r = (p50_p95(samples[w]) for w in ("grpc", "engine", "raw"))
        label = f"{name} {DESCRIPTIONS[name]}"
        print(f"{label:32s} {cells:6d} | {ms(g[0])} {ms(g[1])} | {ms(e[0]):>10s} {ms(e[1])} | "
              f"{ms(r[0])} {ms(r[1])} | {g[0] / e[0]:11.2f} {ms(g[0] - e[0])}ms")  # fmt: skip


def repeat_phase(client: Client, repeats: int) -> None:
    baseline = []
    for _ in range(max(repeats, 50)):
        start = time.perf_counter()
        client.budget(DATASET)
        baseline.append(time.perf_counter() - start)
    p50, p95 = p50_p95(baseline)
    print(f"\nbaseline: GetBudget round trip (auth + one ledger read) p50 {p50 * 1000:.2f} ms,"
          f" p95 {p95 * 1000:.2f} ms")  # fmt: skip
    for name in ("Q2", "Q4"):
        spec = client_spec(name, 2.5)
        first = client.query(spec)
        samples = []
        for _ in range(max(repeats, 50)):
            start = time.perf_counter()
            again = client.query(spec)
            samples.append(time.perf_counter() - start)
            assert again.repeat
            assert again.charged == 0
        p50, p95 = p50_p95(samples)
        print(f"repeat (free) {name}, {first.frame.height} cells: p50 {p50 * 1000:.2f} ms, "
              f"p95 {p95 * 1000:.2f} ms over {len(samples)} calls")  # fmt: skip


def cells_phase(version: DatasetVersion, client: Client, repeats: int, eps: Epsilons) -> None:
    """Fresh and free-repeat latency by answer size, beside raw Polars (same run, interleaved)."""
    print(f"\n{'query':40s} {'cells':>6s} | {'fresh p50':>9s} {'p95':>8s} | {'repeat p50':>10s} "
          f"{'p95':>8s} | {'raw p50':>8s} {'p95':>8s} | {'fresh/raw':>9s}")  # fmt: skip
    for name in SIZED:
        repeated = client_spec(name, 3.5)
        ways = {
            "fresh": through_grpc(client, name, eps),
            "repeat": free_repeat(client, repeated),
            "raw": raw_polars(version, name),
        }
        cells = ways["fresh"]()  # warm
        client.query(repeated)  # the first ask pays; every later one is a free repeat
        ways["raw"]()
        samples: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(repeats):
            for way, f in ways.items():
                samples[way].append(timed(f))
        f50, r50, w50 = (p50_p95(samples[w]) for w in ("fresh", "repeat", "raw"))
        label = f"{name} {DESCRIPTIONS[name]}"
        print(f"{label:40s} {cells:6d} | {ms(f50[0]):>9s} {ms(f50[1])} | {ms(r50[0]):>10s} "
              f"{ms(r50[1])} | {ms(w50[0])} {ms(w50[1])} | {f50[0] / w50[0]:9.2f}")  # fmt: skip


def throughput_phase(server: Server, clients: int, per_client: int, eps: Epsilons) -> None:
    latencies: list[float] = []
    overloaded = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def worker(index: int) -> None:
        with Client(server.target, server.analyst_token, retries=0) as client:
            client.datasets()  # connect before the clock starts
            barrier.wait()
            for k in range(per_client):
                name = QUERIES[(index + k) % len(QUERIES)]
                spec = client_spec(name, eps.fresh())
                key = uuid.uuid4().hex
                start = time.perf_counter()
                while True:
                    try:
                        client.query(spec, idempotency_key=key)
                        break
                    except OverloadedError as busy:
                        with lock:
                            overloaded[0] += 1
                        time.sleep(busy.retry_after or 0.1)
                with lock:
                    latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    p50, p95 = p50_p95(latencies)
    print(f"throughput: {clients} clients x {per_client} fresh queries (Q1-Q5 mixed) in "
          f"{wall:.1f} s = {len(latencies) / wall:.2f} queries/s; per call p50 {p50:.2f} s, "
          f"p95 {p95:.2f} s; OVERLOADED answers (retried) {overloaded[0]}")  # fmt: skip


def bench_scale(args: argparse.Namespace, practices: int, processes: int) -> None:
    data = Path(args.data)
    store = data / f"p{practices}"
    version = ensure_demo_dataset(store, data / "secrets" / "key", practices, seed=7)
    rows = sum(f.rows for f in version.manifest.appointment_files)
    print(f"\n## {practices} practices, {rows:,} rows, {processes} serving process(es);"
          " load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    server = start_server(store, data / "runs" / f"p{practices}", processes)
    eps = Epsilons()
    try:
        with rss_sampler(server), Client(server.target, server.analyst_token) as client:
            if "latency" in args.phases:
                latency_phase(version, client, args.repeats, eps)
            if "cells" in args.phases:
                cells_phase(version, client, args.repeats, eps)
            if "repeat" in args.phases:
                repeat_phase(client, args.repeats)
            if "throughput" in args.phases:
                throughput_phase(server, args.clients, args.per_client, eps)
    finally:
        stop_server(server)
    peaks = server.peaks
    print(f"peak RSS: server (the supervisor, with several processes) "
          f"{peaks.get('server', 0):.0f} MB, largest child (worker or serving process) "
          f"{peaks.get('child', 0):.0f} MB, server + {peaks.get('children', 0):.0f} children "
          f"{peaks.get('total', 0):.0f} MB; this process (in-process engine) "
          f"{psutil.Process().memory_info().rss / 2**20:.0f} MB now")  # fmt: skip
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", default="20,190", help="practices per dataset, comma-separated")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per query and way")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--per-client", type=int, default=5, help="queries per client")
    parser.add_argument("--data", default="/tmp/dpgate_bench")
    parser.add_argument(
        "--processes",
        default="1",
        help="server.processes to run each scale with, comma-separated (e.g. 1,2)",
    )
    parser.add_argument(
        "--phases", default="latency,cells,repeat,throughput", help="phases to run, comma-separated"
    )
    args = parser.parse_args()
    args.phases = set(args.phases.split(","))
    configure_process()  # the in-process engine runs as the server's workers do
    print(
        f"# gRPC end-to-end benchmark: {args.repeats} timed runs per query and way (after one"
        f" warm run), times in ms; {os.cpu_count()} CPUs; Polars streaming on everywhere"
    )
    for practices in [int(p) for p in args.scales.split(",")]:
        for processes in [int(n) for n in args.processes.split(",")]:
            bench_scale(args, practices, processes)


if __name__ == "__main__":
    main()
