"""Publish on a nearly full disk (for test_full_disk.py); run inside `unshare -Urm`.

Usage: python full_disk_child.py <world root> <scratch folder> <stage>:<free bytes>...

Mounts a small tmpfs at the scratch folder (a private mount namespace: nothing outside
sees it), copies the world onto it and stages an extract. Each attempt publishes and, when
the publish reports `stage` (its start; "sealing": after the last check, just before the
version is sealed), fills the disk to leave that many bytes, then records what happened.
Finally the disk is freed and the dataset published once more. Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from dpgate_server.governance.errors import GovernanceError
from dpgate_server.governance.publish_progress import PublishProgress
from dpgate_server.store.store import DatasetStore
from tests.unit.governance.helpers import (
    DATASET_ID,
    OPERATOR,
    SMALL,
    RecordingAudit,
    copy_world,
    open_governance,
    provider,
    world_at,
)

DISK_BYTES = 48 * 1024 * 1024


def fill(path: Path, leave: int) -> None:
    """Write a file so that only about `leave` bytes stay free."""
    stats = os.statvfs(path.parent)
    size = max(0, stats.f_bavail * stats.f_frsize - leave)
    with path.open("wb") as handle:
        handle.truncate(0)
        block = b"\0" * (1 << 20)
        while size > 0:
            handle.write(block[: min(size, len(block))])
            size -= min(size, len(block))


def state(root: Path) -> dict[str, Any]:
    store = DatasetStore(root)
    staging = root / DATASET_ID / "staging"
    return {
        "current": store.current_name(DATASET_ID),
        "versions": store.versions(DATASET_ID),
        "staging": sorted(p.name for p in staging.iterdir()) if staging.is_dir() else [],
    }


def main() -> None:
    source, scratch = Path(sys.argv[1]), Path(sys.argv[2])
    scratch.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(scratch)], check=True
    )
    world = copy_world(world_at(source), scratch / "world")
    governance = open_governance(world, RecordingAudit(), publish_memory_bytes=1 << 20)
    governance.ingest(DATASET_ID, SMALL, world.extract(SMALL), provider(SMALL))
    shutil.rmtree(world.root / "extracts")
    filler = scratch / "filler"
    attempts = []
    for attempt in sys.argv[3:]:
        stage, leave = attempt.split(":")

        def fill_at(progress: PublishProgress, stage: str = stage, leave: int = int(leave)) -> None:
            sealing = progress.stage.value == "verifying" and progress.done == progress.total
            if (progress.stage.value == stage and progress.done == 0) or (
                stage == "sealing" and sealing
            ):
                fill(filler, leave)

        try:
            governance.publish(DATASET_ID, OPERATOR, progress=fill_at)
            outcome = {"attempt": attempt, "published": True}
        except GovernanceError as exc:
            outcome = {"attempt": attempt, "reason": exc.reason, "message": exc.message}
        filler.unlink(missing_ok=True)
        attempts.append({**outcome, **state(world.store_root)})
    governance.publish(DATASET_ID, OPERATOR)
    print(json.dumps({"attempts": attempts, "after": state(world.store_root)}))


if __name__ == "__main__":
    main()
