"""A publish that fills the disk fails cleanly: nothing visible, a clear message.

The disk is a real 48 MB tmpfs in a private mount namespace (`unshare -Urm`), so the
writers meet a real ENOSPC wherever it happens (bucket files, month files, manifest).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.governance.helpers import World

CHILD = Path(__file__).with_name("full_disk_child.py")
ATTEMPTS = ("reading:65536", "reading:2000000", "writing:0", "writing:500000", "sealing:0")
"""When the disk fills (the stage at whose start it is filled) and how many bytes stay free:
each too little for what the publish still has to write, so each fails at another step
(bucket files, month files, the manifest)."""


def _namespaces_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-Urm", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _namespaces_available(), reason="needs `unshare -Urm` (mount namespaces)")
def test_full_disk_during_publish_fails_cleanly_and_a_later_publish_succeeds(
    governance_world: World, tmp_path: Path
) -> None:
    command = ["unshare", "-Urm", sys.executable, str(CHILD), str(governance_world.root)]
    command += [str(tmp_path / "disk"), *ATTEMPTS]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert [a["attempt"] for a in report["attempts"]] == list(ATTEMPTS)
    for attempt in report["attempts"]:
        assert attempt.get("reason") == "STORAGE_FULL", attempt
        assert "filled up during the publish; nothing was published" in attempt["message"]
        assert attempt["current"] == "v000001"
        assert attempt["versions"] == ["v000001"]
        assert attempt["staging"] == []
    assert report["after"] == {
        "current": "v000002",
        "versions": ["v000001", "v000002"],
        "staging": [],
    }
