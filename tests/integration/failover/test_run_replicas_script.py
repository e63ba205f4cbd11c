"""scripts/run-replicas.sh: its printed client lines answer through both replicas, keep
answering when one is killed, and SIGTERM leaves no replica and no PostgreSQL behind.

The script runs as a user would run it, on a tiny demo (two practices) in tmp_path.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from typer.testing import CliRunner

from dpgate.cli import app

REPOSITORY = Path(__file__).resolve().parents[3]
SCRIPT = REPOSITORY / "scripts" / "run-replicas.sh"
READY_TIMEOUT_S = 300.0
"""Only to end a hung start with a message; no assertion depends on time."""


def _free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(p.getsockname()[1]) for p in probes]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not a running process: it is only waiting for its parent to reap it.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


class ScriptOutput:
    """The script's output, read by a thread (so waiting for a line can time out)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._seen: list[str] = []
        assert process.stdout is not None
        stdout = process.stdout

        def pump() -> None:
            for line in stdout:
                self._lines.put(line)
            self._lines.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def until(self, last: str) -> str:
        """Everything printed up to the line `last`."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"no line {last!r}; output:\n" + "".join(self._seen)
            self._seen.append(line)
            if line.strip() == last:
                return "".join(self._seen)

    def rest(self) -> str:
        """Everything printed until the script ended."""
        while (line := self._lines.get(timeout=READY_TIMEOUT_S)) is not None:
            self._seen.append(line)
        return "".join(self._seen)


def test_printed_lines_answer_through_both_replicas_and_sigterm_leaves_nothing(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "replicas"
    ports = _free_ports(2)
    env = {
        **os.environ,
        "DPGATE_REPLICAS_DIR": str(folder),
        "DPGATE_REPLICA_PORTS": f"{ports[0]} {ports[1]}",
        "DPGATE_STORAGE__DATA_DIR": str(tmp_path / "data"),
        "DPGATE_STORAGE__KEY_FILE": str(tmp_path / "keys" / "pseudonym.key"),
        "DPGATE_DEMO__PRACTICES": "2",
    }
    process = subprocess.Popen(
        ["bash", str(SCRIPT)],
        cwd=REPOSITORY,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = ScriptOutput(process)
        printed = output.until("run-replicas: ready")
        pids = [int(p) for p in re.findall(r"replica \d: \S+ +pid (\d+)", printed)]
        cluster_folder = Path(json.loads((folder / "postgres.json").read_text())["folder"])
        postmaster = int((cluster_folder / "data" / "postmaster.pid").read_text().split()[0])
        assert len(pids) == 2
        assert all(_alive(pid) for pid in [*pids, postmaster])

        # The Python lines, as printed, through both replicas.
        snippet = printed.split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
        assert f"127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}" in snippet
        answered = subprocess.run(
            [sys.executable, "-c", snippet], capture_output=True, text=True, timeout=300
        )
        assert answered.returncode == 0, answered.stderr

        # The command line, as printed, after one replica was killed.
        os.kill(pids[0], signal.SIGKILL)
        line = printed[printed.index("DPGATE_TARGET=") :].split("\n\n")[0].replace("\\\n", " ")
        words = shlex.split(line)
        assert words[2:5] == [".tools/bin/uv", "run", "dpgate"]
        environment = dict(word.split("=", 1) for word in words[:2])
        result = CliRunner().invoke(
            app,
            words[5:],
            env={**environment, "DPGATE_CONFIG": str(tmp_path / "none.toml"), "COLUMNS": "200"},
        )
        assert result.exit_code == 0, result.output
        assert "remaining epsilon" in result.stdout

        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        rest = output.rest()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "replicas stopped, PostgreSQL cluster deleted" in rest
    assert not any(_alive(pid) for pid in [*pids, postmaster])
    assert not cluster_folder.exists()
