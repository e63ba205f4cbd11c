"""What every query worker re-runs before its target: the server's entry module, kept light.

A child started with "spawn" runs its parent's main module again (as `__mp_main__`) before
it unpickles its target. The `dpgate-server` console script and `python -m
dpgate_server.cli` make that `dpgate_server.cli`, so whatever the entry module imports at
its top is paid by every worker start (and every restart). The rule: it imports the
standard library only; the commands, and everything they need, load when `main()` runs.
What the worker's own target may import is checked on a live worker
(tests/integration/execution/test_worker_start.py).
"""

from __future__ import annotations

import subprocess
import sys

_NEW_MODULES = (
    "import sys\n"
    "before = set(sys.modules)\n"
    "import dpgate_server.cli\n"
    "print('\\n'.join(sorted(set(sys.modules) - before)))\n"
)


def _modules_the_entry_imports() -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", _NEW_MODULES], capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def test_entry_module_imports_only_the_standard_library() -> None:
    loaded = _modules_the_entry_imports()
    assert "dpgate_server.cli" in loaded
    outside = [
        name
        for name in loaded
        if name.partition(".")[0] not in sys.stdlib_module_names
        and name.partition(".")[0] != "dpgate_server"
    ]
    assert outside == []
    ours = sorted(name for name in loaded if name.startswith("dpgate_server"))
    assert ours == ["dpgate_server", "dpgate_server.cli"]
