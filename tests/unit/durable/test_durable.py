"""The one module that makes files durable: atomic replacement, creation once, locks."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dpgate_server.durable import (
    create_exclusively,
    exclusive_lock,
    remove_temporaries,
    replace_text,
    replace_with,
)

_TRY_LOCK = """
import fcntl, sys
with open(sys.argv[1], "a") as handle:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(3)
"""


def _other_process_can_lock(path: Path) -> bool:
    result = subprocess.run([sys.executable, "-c", _TRY_LOCK, str(path)], check=False)
    assert result.returncode in (0, 3)
    return result.returncode == 0


def test_exclusive_lock_keeps_other_processes_out_until_released(tmp_path: Path) -> None:
    lock = tmp_path / "sub" / "LOCK"
    with exclusive_lock(lock):
        assert not _other_process_can_lock(lock)
    assert _other_process_can_lock(lock)


def test_replace_text_swaps_the_whole_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    replace_text(target, "old")
    replace_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    replace_text(target, "old")

    def half_write(path: Path) -> None:
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_with(target, half_write)
    assert target.read_text() == "old"
    assert remove_temporaries(tmp_path) == 0


def test_create_exclusively_creates_once_for_the_owner_only(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "key.bin"
    assert create_exclusively(key, b"first")
    assert not create_exclusively(key, b"second")
    assert key.read_bytes() == b"first"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
