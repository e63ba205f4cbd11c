"""Run governance operations in a loop until killed (for test_crash.py).

Usage: python crash_child.py <world root> publish|ingest
Prints "ready" once imported and set up, waits for a line on stdin, then loops. A publish
runs with a small memory setting (many groups and buckets) and prints "stage <name>" when
each of its stages starts.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from dpgate_server.governance.publish_progress import PublishProgress
from tests.unit.governance.helpers import (
    DATASET_ID,
    OPERATOR,
    SMALL,
    RecordingAudit,
    csv_bytes,
    good_row,
    open_governance,
    provider,
    world_at,
)

SMALL_MEMORY = 8 * 1024 * 1024


def announce(progress: PublishProgress) -> None:
    if progress.done == 0:
        print(f"stage {progress.stage.value}", flush=True)


def main() -> None:
    root, operation = Path(sys.argv[1]), sys.argv[2]
    world = world_at(root)
    governance = open_governance(world, RecordingAudit(), publish_memory_bytes=SMALL_MEMORY)
    extracts = [world.extract(SMALL), csv_bytes([good_row()])]
    print("ready", flush=True)
    sys.stdin.readline()
    turn = 0
    while True:
        if operation == "publish":
            governance.publish(DATASET_ID, OPERATOR, progress=announce)
        else:
            governance.ingest(DATASET_ID, SMALL, extracts[turn % 2], provider(SMALL))
        turn += 1


if __name__ == "__main__":
    main()
