"""Run governance operations in a loop until killed (for test_crash.py).

Usage: python crash_child.py <world root> publish|ingest
Prints "ready" once imported and set up, waits for a line on stdin, then loops.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

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


def main() -> None:
    root, operation = Path(sys.argv[1]), sys.argv[2]
    world = world_at(root)
    governance = open_governance(world, RecordingAudit())
    extracts = [world.extract(SMALL), csv_bytes([good_row()])]
    print("ready", flush=True)
    sys.stdin.readline()
    turn = 0
    while True:
        if operation == "publish":
            governance.publish(DATASET_ID, OPERATOR)
        else:
            governance.ingest(DATASET_ID, SMALL, extracts[turn % 2], provider(SMALL))
        turn += 1


if __name__ == "__main__":
    main()
