"""Publish time and peak memory: every practice's extract staged, then one publish.

Usage: uv run python bench/publish.py [--practices 150] [--seed 2025] [--folder DIR]
                                      [--memory-mb 4096] [--runs 1] [--carried]

Prepares once (not timed, kept in --folder for later runs): the synthetic dataset, every
practice's raw extract, both opt-out lists, and every extract ingested and staged; with
--carried, only the dataset: every practice's rows are then carried forward from the
current version (a publish after a few uploads). Each run publishes in a fresh child
process (so its peak resident memory is the publish's alone, imports included) and prints
seconds and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dpgate_server.governance.optouts import OptOutKind
from dpgate_server.governance.service import Governance, GovernancePolicy
from dpgate_server.ledger.model import Outcome, Principal, RequestInfo, Role
from dpgate_server.store.pseudonym import load_or_create_key
from dpgate_server.store.store import DatasetStore
from dpgate_server.synthetic.generator import ensure_demo_dataset
from dpgate_server.synthetic.raw_extracts import write_raw_extracts

OPERATOR = RequestInfo(request_id="bench", rpc="Bench")
DATASET = "gp_appointments"


class NoAudit:
    def record_event(self, request: RequestInfo, outcome: Outcome, **kwargs: Any) -> None:
        return None


def governance(folder: Path, memory_mb: int) -> Governance:
    policy = GovernancePolicy(
        folder / "governance",
        2**34,
        {},
        frozenset({DATASET}),
        publish_memory_bytes=memory_mb * 1024 * 1024,
        keep_versions=1,
    )
    key_file = folder / "secrets" / "key"
    return Governance(
        DatasetStore(folder / "store"), policy, lambda: load_or_create_key(key_file), NoAudit()
    )


def prepare(folder: Path, practices: int, seed: int, *, carried: bool) -> None:
    ready = folder / "READY"
    if ready.exists():
        return
    started = time.perf_counter()
    ensure_demo_dataset(folder / "store", folder / "secrets" / "key", practices, seed)
    if carried:
        ready.touch()
        print(f"prepared the dataset in {time.perf_counter() - started:.0f} s")
        return
    files = write_raw_extracts(folder / "extracts", practices, seed)
    gov = governance(folder, 4096)
    gov.load_opt_out_list(OptOutKind.NATIONAL, files.national_opt_out, OPERATOR)
    gov.load_opt_out_list(OptOutKind.TYPE1, files.type1_opt_out, OPERATOR)
    principal = Principal("bench", Role.PROVIDER, "bench", frozenset(files.extracts))
    request = RequestInfo(request_id="bench", rpc="UploadExtract", principal=principal)
    for code, path in files.extracts.items():
        gov.ingest(DATASET, code, path.read_bytes(), request)
        path.unlink()
    ready.touch()
    seconds = time.perf_counter() - started
    print(f"prepared {len(files.extracts)} staged practices in {seconds:.0f} s")


def child(folder: Path, memory_mb: int) -> None:
    gov = governance(folder, memory_mb)
    started = time.perf_counter()
    result = gov.publish(DATASET, OPERATOR)
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_mib": peak_kib / 1024,
                "rows": result.rows,
                "version": result.version.version,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--practices", type=int, default=150)
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--memory-mb", type=int, default=4096)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--carried", action="store_true", help="no uploads: carry every row")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.folder, args.memory_mb)
        return
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder or Path(scratch)
        prepare(folder, args.practices, args.seed, carried=args.carried)
        for _ in range(args.runs):
            command = [sys.executable, __file__, "--child", "--folder", str(folder)]
            command += ["--memory-mb", str(args.memory_mb)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            figures = json.loads(out.strip().splitlines()[-1])
            print(
                f"publish of {figures['rows']:,} rows ({args.practices} practices, memory "
                f"setting {args.memory_mb} MiB): {figures['seconds']:.1f} s, "
                f"{figures['rows'] / figures['seconds']:,.0f} rows/s, "
                f"peak RSS {figures['peak_rss_mib']:,.0f} MiB"
            )


if __name__ == "__main__":
    main()
