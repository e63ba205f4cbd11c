"""Server start: seconds from launching `dpgate-server serve` to health SERVING.

Usage: uv run python bench/server_start.py --config FILE [--starts 7]

The config's data must already be in place (a demo config: run `dpgate-server
generate-demo --config FILE` once first), so the figure is a restart's, not a first
generation's. Each start launches the console script as an operator would, polls the
standard gRPC health check every 20 ms until it answers SERVING, reads the CPU seconds the
server process and each of its children (query workers) have used by then, and stops the
server with SIGTERM before the next start. Prints the median and range of the wall time,
the median CPU seconds of the server process and of one query worker, and the load.

The figure depends most on whether Python finds compiled bytecode: the output says which.
Where PYTHONDONTWRITEBYTECODE is set and the install has no .pyc files (uv installs none
unless asked: `--compile-bytecode`), every process compiles each module it imports, every
start. To measure with bytecode anyway: run this once under `env -u PYTHONDONTWRITEBYTECODE
PYTHONPYCACHEPREFIX=/tmp/pyc` (it writes the cache), then under `PYTHONPYCACHEPREFIX=/tmp/pyc`
alone (children inherit it).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dpgate_server.config import load_settings

READY_TIMEOUT_S = 180.0
_POLL_S = 0.02


@dataclass(frozen=True, slots=True)
class Start:
    """One start: wall seconds to SERVING, CPU seconds of the server and of each child."""

    wall_s: float
    server_cpu_s: float
    children_cpu_s: tuple[float, ...]


def bytecode_note() -> str:
    """Whether imports here read compiled bytecode or compile every module from source.

    A start's import time depends on it more than on anything else: with
    PYTHONDONTWRITEBYTECODE set and an install without .pyc files (uv's default), every
    process compiles each module it imports, every time.
    """
    import polars  # noqa: PLC0415

    # Where Python looks for a module's bytecode (under PYTHONPYCACHEPREFIX if set).
    cached = Path(importlib.util.cache_from_source(polars.__file__ or ""))
    if not cached.exists():
        return "no bytecode cache: every import compiled from source"
    return f"bytecode cached ({sys.pycache_prefix or 'beside the sources'})"


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _serving(stub: health_pb2_grpc.HealthStub) -> bool:
    try:
        answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
    except grpc.RpcError:
        return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def time_one_start(command: list[str], address: str) -> Start:
    """Launch the server, wait for SERVING, measure, stop it."""
    started = time.perf_counter()
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    channel = grpc.insecure_channel(address)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        while not _serving(stub):
            if server.poll() is not None:
                raise SystemExit(f"the server exited with {server.returncode} before serving")
            if time.perf_counter() - started > READY_TIMEOUT_S:
                raise SystemExit(f"the server was not serving within {READY_TIMEOUT_S:.0f} s")
            time.sleep(_POLL_S)
        wall = time.perf_counter() - started
        process = psutil.Process(server.pid)
        children = tuple(_cpu_s(child) for child in process.children(recursive=True))
        return Start(wall, _cpu_s(process), children)
    finally:
        channel.close()
        server.terminate()
        server.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--starts", type=int, default=7)
    args = parser.parse_args()
    address = load_settings(args.config).server.address
    executable = shutil.which("dpgate-server", path=str(Path(sys.executable).parent))
    if executable is None:
        raise SystemExit("dpgate-server is not installed beside this Python")
    command = [executable, "serve", "--config", str(args.config)]
    starts = [time_one_start(command, address) for _ in range(args.starts)]
    walls = [s.wall_s for s in starts]
    # The query workers are the children that used CPU (multiprocessing's resource
    # tracker, if any, uses next to none).
    workers = [c for s in starts for c in s.children_cpu_s if c > 0.1]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"server start to SERVING: median {statistics.median(walls):.2f} s wall (min "
        f"{min(walls):.2f}, max {max(walls):.2f}); server process "
        f"{statistics.median(s.server_cpu_s for s in starts):.2f} CPU s, query worker "
        f"{statistics.median(workers) if workers else float('nan'):.2f} CPU s (medians); "
        f"{len(starts)} starts ({os.cpu_count()} cores, load average {load}; {bytecode_note()})"
    )


if __name__ == "__main__":
    main()
