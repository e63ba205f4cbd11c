"""Benchmark the synthetic GP appointments generator and measure the AGP checklist.

Runs `python -m dpgate_server.synthetic.generator` in a subprocess for each scale, polling the
whole process tree's resident memory, then reads the published version back and prints
the checklist figures (plain statistics over the synthetic files).

    uv run python bench/generate.py --practices 150 all --workdir /tmp/dpgate-bench
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

from dpgate_server.store.store import DatasetStore, DatasetVersion
from dpgate_server.synthetic import agp_checklist
from dpgate_server.synthetic.gp_metadata import DATASET_ID


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of a process and all its descendants."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def run_generator(
    practices: str, seed: int, store: Path, key_file: Path, workers: str
) -> tuple[float, int]:
    """(seconds, peak tree RSS in bytes) of one generator run."""
    command = [
        sys.executable,
        "-m",
        "dpgate_server.synthetic.generator",
        "--practices",
        practices,
        "--seed",
        str(seed),
        "--store",
        str(store),
        "--key-file",
        str(key_file),
    ]
    if workers != "auto":
        command += ["--workers", workers]
    started = time.perf_counter()
    child = subprocess.Popen(command)
    watched = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        try:
            peak = max(peak, tree_rss(watched))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"generator failed with exit code {child.returncode}")
    return elapsed, peak


def print_checklist(version: DatasetVersion) -> None:
    started = time.perf_counter()
    volume = agp_checklist.volume_figures(version)
    rows = agp_checklist.row_figures(version)
    patients = agp_checklist.patient_figures(version)
    practices = agp_checklist.practice_figures()
    pct = lambda x: f"{100 * x:.2f}%"  # noqa: E731
    print("  checklist figures:")
    print(
        f"    per included patient {volume.per_included_patient:.3f} "
        f"(before bound {volume.per_included_patient_before_bound:.3f}); "
        f"national projection {volume.national_rows_projection / 1e6:.1f} M; "
        f"opt-out {pct(volume.opt_out_share)}"
    )
    for name in ("status", "mode", "hcp_type", "lead_time_band", "service_setting"):
        shares = getattr(rows, name)
        print(f"    {name}: " + ", ".join(f"{k} {pct(v)}" for k, v in sorted(shares.items())))
    top = sorted(rows.national_category.items(), key=lambda kv: -kv[1])
    print(
        "    national_category: "
        + ", ".join(f"{k} {pct(v)}" for k, v in top[:6])
        + f" ... ({len(top)} labels)"
    )
    print(
        f"    October DNA {pct(rows.october_dna)}; within 7 days {pct(rows.within_seven_days)}; "
        f"non-attended 2+ days / same-next {rows.non_attended_ratio_two_plus_days:.2f}"
    )
    print(
        f"    weekdays {pct(rows.weekday_share)}; Mon/Fri {rows.monday_friday_ratio:.3f}; "
        f"Saturday DNA x{rows.saturday_dna_ratio:.2f}; bank holiday "
        f"{pct(rows.bank_holiday_relative)} of a working day"
    )
    print(
        "    per working day vs year: "
        + ", ".join(f"{m} {r:.3f}" for m, r in rows.per_working_day_ratio.items())
    )
    print(
        f"    practices (England model) {practices.practices}, sub-ICBs {practices.sub_icbs}, "
        f"ICBs {practices.icbs}, regions {practices.regions}; list size median "
        f"{practices.list_size_median:.0f}, IQR {practices.list_size_q1:.0f}-"
        f"{practices.list_size_q3:.0f}, p95 {practices.list_size_p95:.0f}"
    )
    print(
        f"    patients: female {pct(patients.female)}, 65+ {pct(patients.aged_65_plus)}, "
        f"0-14 {pct(patients.aged_0_14)}"
    )
    print(f"  (checklist measured in {time.perf_counter() - started:.1f} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--practices", nargs="+", default=["150"], help='N or "all", several ok')
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", default="auto")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dpgate-bench-generate"))
    parser.add_argument("--no-checklist", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the generated stores")
    args = parser.parse_args()
    key_file = args.workdir / "secrets" / "pseudonym.key"
    for practices in args.practices:
        store_root = args.workdir / f"store-{practices}"
        shutil.rmtree(store_root, ignore_errors=True)
        seconds, peak = run_generator(practices, args.seed, store_root, key_file, args.workers)
        version = DatasetStore(store_root).current(DATASET_ID)
        rows = int(version.manifest.source["rows"])
        size = sum(p.stat().st_size for p in version.path.rglob("*.parquet"))
        print(
            f"practices={practices} ({version.manifest.source['practice_count']} practices, "
            f"{version.manifest.source['registered_patients']:,} patients): {rows:,} rows in "
            f"{seconds:.1f} s = {rows / seconds:,.0f} rows/s; peak RSS (process tree) "
            f"{peak / 2**20:,.0f} MiB; files {size / 2**20:,.0f} MiB"
        )
        if not args.no_checklist:
            print_checklist(version)
        if not args.keep:
            shutil.rmtree(store_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
